//! `FENCE.CALL fence-key token command [arg ...]`: one command run behind a fence,
//! atomically, as the contract says: the inner command's own reply when the token
//! passes, `-STALE` and nothing run when it does not; the inner command's keys reported
//! to Redis (`COMMAND GETKEYS`, ACL); the caller's permissions checked for it; replicated
//! and written to the AOF as Redis would; refused inner commands answer the stated
//! error and change nothing; it works in MULTI and scripts and is refused on a replica.

mod support;

use redis::Value;
use support::*;

fn next(c: &mut redis::Connection, fence: &str) -> i64 {
    value_int(&raws(c, &["FENCE.NEXT", fence])).expect("FENCE.NEXT")
}

fn call(c: &mut redis::Connection, fence: &str, token: i64, inner: &[&str]) -> Value {
    let t = token.to_string();
    let mut args = vec!["FENCE.CALL", fence, &t];
    args.extend_from_slice(inner);
    raws(c, &args)
}

fn is_ok(v: &Value) -> bool {
    matches!(v, Value::Okay) || value_text(v).as_deref() == Some("OK")
}

fn current(c: &mut redis::Connection, fence: &str) -> i64 {
    value_int(&raws(c, &["FENCE.CURRENT", fence])).expect("FENCE.CURRENT")
}

#[test]
fn a_passing_token_runs_the_command_and_answers_its_reply() {
    let s = Server::new();
    let mut c = s.conn();
    let t = next(&mut c, "f");
    assert_eq!(call(&mut c, "f", t, &["LPUSH", "q", "a", "b"]), Value::Int(2));
    assert_eq!(call(&mut c, "f", t, &["LRANGE", "q", "0", "-1"]), raws(&mut c, &["LRANGE", "q", "0", "-1"]));
    assert!(is_ok(&call(&mut c, "f", t, &["SET", "k", "v"])));
    assert_eq!(value_text(&call(&mut c, "f", t, &["GET", "k"])).as_deref(), Some("v"));
    assert_eq!(call(&mut c, "f", t, &["GET", "missing"]), Value::Nil);
    // A newer token is recorded, as FENCE.CHECK records it.
    assert_eq!(call(&mut c, "f", t + 10, &["INCRBY", "n", "5"]), Value::Int(5));
    assert_eq!(current(&mut c, "f"), t + 10);
}

#[test]
fn a_stale_token_runs_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    let t = next(&mut c, "f");
    let e = value_err(&call(&mut c, "f", t - 1, &["SET", "k", "v"])).expect("STALE");
    assert!(e.starts_with("STALE"), "{e}");
    assert_eq!(raws(&mut c, &["EXISTS", "k"]), Value::Int(0));
    assert_eq!(current(&mut c, "f"), t);
}

#[test]
fn refused_inner_commands_answer_the_stated_error_and_change_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    let t = next(&mut c, "f");
    let refused: &[&[&str]] = &[
        &["BLPOP", "q", "0"],
        &["BRPOPLPUSH", "a", "b", "0"],
        &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
        &["WAIT", "0", "0"],
        &["MULTI"],
        &["EXEC"],
        &["DISCARD"],
        &["WATCH", "k"],
        &["EVAL", "return 1", "0"],
        &["EVALSHA", "e0e1f9fabfc9d4800c877a703b823ac0578ff8db", "0"],
        &["FCALL", "f", "0"],
        &["SUBSCRIBE", "ch"],
        &["PUBLISH", "ch", "x"],
        &["CONFIG", "SET", "maxmemory", "0"],
        &["DEBUG", "SLEEP", "0"],
        &["SHUTDOWN"],
        &["FENCE.CALL", "f", "1", "SET", "k", "v"],
        &["LOCK.ACQUIRE", "l", "me", "1000", "WAIT", "0"],
    ];
    for inner in refused {
        let e = value_err(&call(&mut c, "f", t + 1, inner)).unwrap_or_else(|| panic!("{inner:?} ran"));
        assert_eq!(e, format!("ERR FENCE.CALL cannot run {}", inner[0]), "{inner:?}");
    }
    assert_eq!(current(&mut c, "f"), t, "a refused call records no token");
    assert_eq!(dbsize(&mut c), 1, "only the fence exists");
}

#[test]
fn an_unknown_command_or_wrong_arity_answers_as_redis_would() {
    let s = Server::new();
    let mut c = s.conn();
    let t = next(&mut c, "f");
    let direct = value_err(&raws(&mut c, &["NOSUCHCMD", "a"])).unwrap();
    assert_eq!(value_err(&call(&mut c, "f", t + 1, &["NOSUCHCMD", "a"])).unwrap(), direct);
    let direct = value_err(&raws(&mut c, &["GET"])).unwrap();
    assert_eq!(value_err(&call(&mut c, "f", t + 1, &["GET"])).unwrap(), direct);
    assert_eq!(current(&mut c, "f"), t, "nothing ran, nothing recorded");
    let e = expect_err(redis::cmd("FENCE.CALL").arg("f").arg(t).query::<Value>(&mut c));
    assert!(e.contains("wrong number of arguments"), "{e}");
}

#[test]
fn an_inner_error_is_the_reply_and_the_token_stays_recorded() {
    let s = Server::new();
    let mut c = s.conn();
    let t = next(&mut c, "f");
    ok(&mut c, &["LPUSH", "list", "x"]);
    let e = value_err(&call(&mut c, "f", t + 5, &["INCR", "list"])).expect("WRONGTYPE");
    assert!(e.starts_with("WRONGTYPE"), "{e}");
    assert_eq!(current(&mut c, "f"), t + 5);
}

#[test]
fn command_getkeys_and_acl_see_the_inner_keys() {
    let s = Server::new();
    let mut c = s.conn();
    let keys: Vec<String> = redis::cmd("COMMAND").arg("GETKEYS").arg("FENCE.CALL").arg("f").arg("1").arg("MSET").arg("a").arg("1").arg("b").arg("2").query(&mut c).unwrap();
    assert_eq!(keys, ["f", "a", "b"]);
    let t = next(&mut c, "f");
    ok(&mut c, &["ACL", "SETUSER", "fenced", "on", "nopass", "~f", "~q*", "+fence.next", "+fence.call", "+lpush", "-get"]);
    let mut u = s.conn();
    ok(&mut u, &["AUTH", "fenced", "x"]);
    assert_eq!(call(&mut u, "f", t, &["LPUSH", "q1", "a"]), Value::Int(1));
    let e = value_err(&call(&mut u, "f", t, &["LPUSH", "other", "a"])).expect("a key outside the user's patterns");
    assert!(e.starts_with("NOPERM"), "{e}");
    let e = value_err(&call(&mut u, "f", t, &["GET", "q1"])).expect("a command the user may not run");
    assert!(e.starts_with("NOPERM") || e.starts_with("ERR acl"), "{e}");
    assert_eq!(raws(&mut c, &["EXISTS", "other"]), Value::Int(0));
}

#[test]
fn it_works_in_multi_and_scripts_and_a_stale_call_in_a_transaction_writes_nothing() {
    let s = Server::new();
    let mut c = s.conn();
    let t = next(&mut c, "f");
    ok(&mut c, &["MULTI"]);
    raws(&mut c, &["FENCE.CALL", "f", &(t - 1).to_string(), "SET", "stale", "1"]);
    raws(&mut c, &["FENCE.CALL", "f", &t.to_string(), "SET", "fresh", "1"]);
    let Value::Array(replies) = raws(&mut c, &["EXEC"]) else { panic!("EXEC") };
    assert!(value_err(&replies[0]).is_some_and(|e| e.starts_with("STALE")), "{replies:?}");
    assert!(is_ok(&replies[1]), "{replies:?}");
    assert_eq!(raws(&mut c, &["EXISTS", "stale", "fresh"]), Value::Int(1));
    let script = "return redis.call('FENCE.CALL', KEYS[1], ARGV[1], 'INCRBY', KEYS[2], '7')";
    assert_eq!(raws(&mut c, &["EVAL", script, "2", "f", "n", &t.to_string()]), Value::Int(7));
}

#[test]
fn replicas_and_the_aof_get_the_inner_write_and_a_replica_refuses_it() {
    let master = Server::start(&["appendonly yes", "appendfsync always", "repl-diskless-sync-delay 0"]);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let t = next(&mut m, "f");
    assert_eq!(call(&mut m, "f", t + 1, &["INCRBY", "n", "3"]), Value::Int(3));
    assert_eq!(call(&mut m, "f", t + 2, &["RPUSH", "q", "a", "b"]), Value::Int(2));
    await_sync(&master, &replica);
    let mut r = replica.conn();
    assert_eq!(value_text(&raws(&mut r, &["GET", "n"])).as_deref(), Some("3"));
    assert_eq!(raws(&mut r, &["LLEN", "q"]), Value::Int(2));
    assert_eq!(current(&mut r, "f"), t + 2);
    let e = value_err(&call(&mut r, "f", t + 3, &["INCR", "n"])).expect("a replica refuses a write");
    assert!(e.starts_with("READONLY"), "{e}");
    let before = digest(&mut m);
    ok(&mut m, &["DEBUG", "LOADAOF"]);
    assert_eq!(digest(&mut m), before, "the AOF replays to the same data");
}

/// In Redis Cluster the fence key and the command's keys route together: all in one slot,
/// else `-CROSSSLOT` before anything runs. (A one-node cluster holding every slot; moving
/// slots between nodes is the cluster suite's.)
#[test]
fn in_a_cluster_the_fence_and_the_command_keys_must_share_a_slot() {
    let s = Server::start(&["cluster-enabled yes"]);
    let mut c = s.conn();
    ok(&mut c, &["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]);
    wait_until(std::time::Duration::from_secs(10), "the cluster is up", || {
        let text: String = redis::cmd("CLUSTER").arg("INFO").query(&mut c).unwrap();
        text.contains("cluster_state:ok")
    });
    let t = next(&mut c, "{a}:fence");
    assert!(is_ok(&call(&mut c, "{a}:fence", t, &["SET", "{a}:data", "v"])));
    let e = value_err(&call(&mut c, "{a}:fence", t, &["SET", "{b}:data", "v"])).expect("keys in two slots");
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    let e = value_err(&call(&mut c, "{a}:fence", t, &["MSET", "{a}:x", "1", "{b}:y", "2"])).expect("inner keys in two slots");
    assert!(e.starts_with("CROSSSLOT"), "{e}");
    assert_eq!(raws(&mut c, &["EXISTS", "{b}:data"]), Value::Int(0), "nothing ran");
    assert_eq!(raws(&mut c, &["EXISTS", "{a}:x"]), Value::Int(0), "nothing ran");
}
