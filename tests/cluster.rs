//! Redis Cluster: locks, waiters and tokens while slots move and masters fail over, on a
//! cluster of 3 masters (with replicas where a failover needs them) made by
//! `redis-cli --cluster create`.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::time::{Duration, Instant};

use cluster::{slot_of, Cluster};
use support::*;

fn countkeysinslot(c: &mut redis::Connection, slot: u16) -> i64 {
    redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot).query(c).unwrap()
}

/// A cluster of 3 masters (each with `replicas` replicas) whose node 0, a master, runs
/// an hour ahead; and a key that node 0 serves.
fn cluster_with_a_master_an_hour_ahead(replicas: usize) -> (Cluster, String) {
    let c = Cluster::start_with(3, replicas, |i| {
        let options = if i == 0 { support::faketime::options(&[]) } else { Options::new() };
        options.keep_dir_on_panic()
    });
    support::faketime::step(&c.nodes[0], 3600);
    assert!(c.is_master(0), "the first node given to redis-cli --cluster create is a master");
    let key = (0..).map(|n| format!("batch{n}")).find(|k| c.owner_of(k) == 0).unwrap();
    (c, key)
}

/// The slot migration that made two holders: a lock held with a client waiting on it,
/// its slot moved with the standard steps. The source deletes the migrated key; it must
/// neither grant the waiter nor bring the key back, and the waiter is redirected.
#[test]
fn a_lock_moved_with_its_slot_keeps_its_one_holder_and_its_waiter_follows_it() {
    let c = Cluster::start(3, 0, &[]);
    let key = "orders";
    let slot = slot_of(key);
    let src = c.owner_of(key);
    let dst = c.another_master(src);
    let mut s = c.conn(src);
    let held = acquire(&mut s, key, "holder", LONG_TTL).unwrap();
    let mut waiter = Waiter::lock(&c.nodes[src], key, "waiter", LONG_TTL, 30_000);
    await_lock_waiters(&mut s, key, 1);

    c.begin_migration(slot, src, dst);
    assert_eq!(c.move_keys(slot, src, dst), 1);
    // The source no longer has the key, and does not revive it for its waiter.
    wait_until(Duration::from_secs(5), "the source settled the migrated key", || {
        module_stat(&mut s, "keys_with_waiters") == 1
    });
    assert_eq!(countkeysinslot(&mut s, slot), 0, "no key left on the source");
    c.end_migration(slot, src, dst);

    let reply = waiter.reply();
    let Reply::Err(e) = &reply else { panic!("the waiter got {reply:?}, not a redirection") };
    assert_eq!(e, &format!("MOVED {slot} 127.0.0.1:{}", c.port(dst)), "redirected to the new owner");
    assert_eq!(countkeysinslot(&mut s, slot), 0, "no key left on the source");
    wait_until(Duration::from_secs(5), "no client waits on the source", || {
        module_stat(&mut s, "waiting_clients") == 0
    });

    let mut d = c.conn(dst);
    let info = lock_info(&mut d, key).expect("the lock moved");
    assert_eq!((info.owner.as_deref(), info.token), (Some(&b"holder"[..]), held), "its holder kept it");
    // The waiter follows the redirection and queues at the new owner.
    let mut again = Waiter::lock(&c.nodes[dst], key, "waiter", LONG_TTL, 30_000);
    await_lock_waiters(&mut d, key, 1);
    assert_eq!(release(&mut d, key, "holder"), 1);
    let token = again.granted();
    assert!(token > held, "tokens rise across the move: {token} after {held}");
}

/// A waiter that came to the importing node with `-ASK` (the key had moved already) and
/// blocked there is served once the move completes, though the lock was released while
/// the slot was still importing.
#[test]
fn a_waiter_queued_at_the_importing_node_is_served_when_the_move_completes() {
    let c = Cluster::start(3, 0, &[]);
    let key = "invoices";
    let slot = slot_of(key);
    let src = c.owner_of(key);
    let dst = c.another_master(src);
    let held = acquire(&mut c.conn(src), key, "holder", LONG_TTL).unwrap();
    c.begin_migration(slot, src, dst);
    c.move_keys(slot, src, dst);

    let mut client = c.client();
    let mut d = c.conn(dst);
    let mut waiter = Raw::connect(c.port(dst), Duration::from_secs(30)).unwrap();
    assert!(waiter.cmd(&["ASKING"]).unwrap().is_ok());
    waiter.send(&["LOCK.ACQUIRE", key, "waiter", &LONG_TTL.to_string(), "WAIT", "30000"]).unwrap();
    wait_until(Duration::from_secs(5), "the waiter blocks at the importing node", || {
        module_stat(&mut d, "waiting_clients") == 1
    });
    // The holder releases through the cluster (-ASK, as its key moved).
    assert_eq!(client.call(&["LOCK.RELEASE", key, "holder"]).unwrap(), redis::Value::Int(1));
    c.end_migration(slot, src, dst);
    let Reply::Int(token) = waiter.read().unwrap() else { panic!("the waiter was not granted") };
    assert!(token > held);
}

/// A free lock leaves no key, so nothing of it moves with its slot: the new owner's
/// tokens must still rise, though its clock is an hour behind the old owner's. The
/// floor the old owner sends over the cluster bus is what keeps them rising.
#[test]
fn tokens_rise_across_a_move_to_a_node_whose_clock_is_an_hour_behind() {
    let (c, key) = cluster_with_a_master_an_hour_ahead(0);
    let ahead = 0;
    let slot = slot_of(&key);
    let behind = c.another_master(ahead);

    let mut a = c.conn(ahead);
    let t1 = acquire(&mut a, &key, "one", LONG_TTL).unwrap();
    assert_eq!(release(&mut a, &key, "one"), 1);
    let mut b = c.conn(behind);
    let behind_clock_part = (server_time_ms(&mut b) - 1_735_689_600_000) << 12;
    assert!(t1 > behind_clock_part + (3000 << 12), "the token came from the clock an hour ahead");
    // The floor reaches the other nodes within milliseconds; a migration takes longer.
    wait_until(Duration::from_secs(5), "the old owner's floor reached the new one", || module_stat(&mut b, "token_floor") >= t1);
    c.migrate_slot(slot, ahead, behind);
    let t2 = acquire(&mut b, &key, "two", LONG_TTL).unwrap();
    assert!(t2 > t1, "the token went back across the move: {t2} after {t1}");
}

/// A manual failover (`CLUSTER FAILOVER` on the replica): the held lock is on the new
/// master with its holder and token, a client blocked on the old master is told (and
/// can acquire again at the new one), and tokens rise.
#[test]
fn after_a_failover_the_holder_keeps_its_lock_and_blocked_waiters_are_told() {
    let c = Cluster::start(3, 1, &[]);
    let key = "report";
    let old = c.owner_of(key);
    let new = c.replica_of(old).expect("the owner has a replica");
    let mut o = c.conn(old);
    let held = acquire(&mut o, key, "holder", LONG_TTL).unwrap();
    let mut waiter = Waiter::lock(&c.nodes[old], key, "waiter", LONG_TTL, 30_000);
    await_lock_waiters(&mut o, key, 1);

    c.failover(new);
    let reply = waiter.reply();
    let Reply::Err(e) = &reply else { panic!("the blocked waiter got {reply:?}") };
    assert!(e.starts_with("UNBLOCKED") || e.starts_with("MOVED"), "told to go elsewhere: {e}");
    c.await_ok();
    assert_eq!(c.owner_of(key), new);

    let mut n = c.conn(new);
    let info = lock_info(&mut n, key).expect("the lock is on the new master");
    assert_eq!((info.owner.as_deref(), info.token), (Some(&b"holder"[..]), held));
    let mut again = Waiter::lock(&c.nodes[new], key, "waiter", LONG_TTL, 30_000);
    await_lock_waiters(&mut n, key, 1);
    assert_eq!(release(&mut n, key, "holder"), 1);
    assert!(again.granted() > held);
}

/// `FENCE.CALL` is routed like Redis's own commands: sent to a node that does not serve
/// its slot it answers `-MOVED`; during a move, after its keys left, `-ASK`; a cluster
/// client following them writes once, at the owner, under the fence.
#[test]
fn fence_call_is_redirected_like_any_command_and_writes_once_at_the_owner() {
    let c = Cluster::start(3, 0, &[]);
    let (fence, data) = ("{acct}:fence", "{acct}");
    let slot = slot_of(fence);
    let src = c.owner_of(fence);
    let dst = c.another_master(src);
    let mut client = c.client();
    let token = match client.call(&["FENCE.NEXT", fence]).unwrap() {
        redis::Value::Int(t) => t,
        other => panic!("FENCE.NEXT answered {other:?}"),
    };
    let t = token.to_string();
    let e = err(&mut c.conn(dst), &["FENCE.CALL", fence, &t, "HSET", data, "a", "1"]);
    assert_eq!(e, format!("MOVED {slot} 127.0.0.1:{}", c.port(src)));
    assert_eq!(client.call(&["FENCE.CALL", fence, &t, "HSET", data, "a", "1"]).unwrap(), redis::Value::Int(1));

    // (Both keys move: a multi-key command finding only some of its keys at either node
    // during a move is answered -TRYAGAIN, as Redis's own are.)
    c.begin_migration(slot, src, dst);
    c.move_keys(slot, src, dst);
    let e = err(&mut c.conn(src), &["FENCE.CALL", fence, &t, "HSET", data, "b", "2"]);
    assert_eq!(e, format!("ASK {slot} 127.0.0.1:{}", c.port(dst)));
    assert_eq!(client.call(&["FENCE.CALL", fence, &t, "HSET", data, "b", "2"]).unwrap(), redis::Value::Int(1));
    c.end_migration(slot, src, dst);
    let stale = (token - 1).to_string();
    let e = client.call(&["FENCE.CALL", fence, &stale, "HSET", data, "c", "3"]).unwrap_err();
    assert!(e.to_string().contains("STALE"), "an older token is refused at the new owner: {e}");
    let fields: Vec<String> = redis::cmd("HKEYS").arg(data).query(&mut c.conn(dst)).unwrap();
    assert_eq!(fields, ["a", "b"], "each write once, at the owner, under the fence");
}

/// A replica promoted by a cluster failover begins the takeover grace: it may lack its
/// master's last grants (not after a coordinated failover, but the server cannot tell).
#[test]
fn a_replica_promoted_by_a_cluster_failover_begins_the_takeover_grace() {
    const GRACE: i64 = 600_000;
    let c = Cluster::start(3, 1, &[&format!("fencelock.takeover-grace {GRACE}")]);
    let key = "ledger";
    let old = c.owner_of(key);
    let new = c.replica_of(old).expect("the owner has a replica");
    let mut n = c.conn(new);
    let left = |c: &mut redis::Connection| module_stat(c, "takeover_grace_left_ms");
    assert!(left(&mut n) > 0, "the grace of the start holds on every node");
    // The replica's own grace began when it loaded its master's data, which may be only
    // milliseconds ago; once it has run a second, a grace begun again stands apart.
    wait_until(Duration::from_secs(30), "the start's grace has run a second", || left(&mut n) < GRACE - 1000);
    let asked = Instant::now();
    c.failover(new);
    let after = left(&mut n);
    let since = asked.elapsed().as_millis() as i64;
    // (`left` rounds down to the ms.)
    assert!(after >= GRACE - since - 1, "the promotion began the grace again: {after} ms left, {since} ms after the failover was asked for");
    assert_eq!(acquire(&mut n, key, "someone", LONG_TTL), None, "and nothing is granted during it");
}

/// Failover to a replica whose clock is an hour behind its master's (`kill -9` of the
/// master, the replica promoted by the cluster): its tokens still rise above the old
/// master's, for a lock it last saw released (no key left to carry the token).
#[test]
fn tokens_rise_across_a_failover_to_a_replica_whose_clock_is_an_hour_behind() {
    let (mut c, key) = cluster_with_a_master_an_hour_ahead(1);
    let ahead = 0;
    let replica = c.replica_of(ahead).expect("node 0 has a replica");
    let mut a = c.conn(ahead);
    let t1 = acquire(&mut a, &key, "one", LONG_TTL).unwrap();
    assert_eq!(release(&mut a, &key, "one"), 1);
    let _: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut a).unwrap();

    c.nodes[ahead].kill9();
    wait_until(Duration::from_secs(30), "the replica took over", || c.is_master(replica));
    c.await_ok();
    let mut r = c.conn(replica);
    let t2 = acquire(&mut r, &key, "two", LONG_TTL).unwrap();
    let behind_clock_part = (server_time_ms(&mut r) - 1_735_689_600_000) << 12;
    assert!(t1 > behind_clock_part, "the old master's token came from a clock an hour ahead");
    assert!(t2 > t1, "the token went back across the failover: {t2} after {t1}");
}
