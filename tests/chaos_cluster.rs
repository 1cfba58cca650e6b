//! Chaos: a Redis Cluster under lock load while its slots move and its masters fail.
//!
//! 3 masters with a replica each, `fencelock.takeover-grace` above the longest lease.
//! Clients (cluster clients following -MOVED/-ASK) take locks on keys spread over the
//! slots, with `WAIT`, hold them a moment and release them. Meanwhile the slots of those
//! keys move between masters (the steps `redis-cli --cluster reshard` takes, and the
//! tool itself on a range of slots), a master
//! is failed over by `CLUSTER FAILOVER`, and one is killed with `kill -9` (its replica
//! takes over after `cluster-node-timeout`; the killed node comes back as a replica).
//! The history checker finds no two holders of a lock and tokens in real-time order per
//! key; in the end no client is left waiting on any node and every key is free.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/history.rs"]
mod history;
mod support;

use std::thread;
use std::time::Duration;

use cluster::{slot_of, Client, Cluster};
use history::{Op, Recorder, Res};
use rand::Rng;
use support::chaos::{scale, Stop};
use support::*;

const LEASE_MS: u64 = 400;
const GRACE: &str = "fencelock.takeover-grace 1000";
const KEYS: usize = 6;

fn key(n: usize) -> String {
    format!("job{n}")
}

fn outcome(r: redis::RedisResult<redis::Value>) -> Res {
    match r {
        Ok(redis::Value::Int(t)) => Res::Granted(t),
        Ok(redis::Value::Nil) => Res::Refused,
        Ok(redis::Value::Okay) => Res::Ok,
        Ok(other) => Res::Error(format!("{other:?}")),
        // Refused by the server (a redirection left unfollowed, UNBLOCKED, CLUSTERDOWN):
        // nothing was done. Lost on the way (a killed node, a time-out): anything was.
        Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => Res::Unknown,
        Err(e) => Res::Error(e.to_string()),
    }
}

/// Takes and releases locks until `stop`, every call recorded.
fn worker(mut client: Client, seed: u64, id: usize, stop: Stop, rec: Recorder) {
    let mut rng = support::seed::rng(seed, &format!("worker{id}"));
    let mut n = 0;
    while !stop.stopped() {
        n += 1;
        let k = key(rng.gen_range(0..KEYS));
        // A fresh owner per grant: every acquire is a new hold.
        let owner = format!("w{id}-{n}");
        let ttl = LEASE_MS.to_string();
        let got = rec.record(Op::Acquire, &k, &owner, LEASE_MS, || {
            outcome(client.call(&["LOCK.ACQUIRE", &k, &owner, &ttl, "WAIT", "3000"]))
        });
        if let Res::Granted(_) = got {
            // The work under the lock (a fraction of the lease, sometimes all of it).
            thread::sleep(Duration::from_millis(rng.gen_range(0..LEASE_MS / 2)));
            rec.record(Op::Release, &k, &owner, 0, || match client.call(&["LOCK.RELEASE", &k, &owner]) {
                Ok(redis::Value::Int(1)) => Res::Ok,
                Ok(redis::Value::Int(0)) => Res::NotHeld,
                other => outcome(other),
            });
        }
    }
}

#[test]
fn locks_keep_one_holder_while_slots_move_and_masters_fail() {
    let seed = support::seed::seed("chaos_cluster");
    let mut c = Cluster::start(3, 1, &[GRACE]);
    let stop = Stop::after(Duration::from_secs(scale(60, 300)));
    let rec = Recorder::with_base(support::chaos::epoch());
    let workers: Vec<_> = (0..scale(6, 12))
        .map(|id| {
            let (client, stop, rec) = (c.client(), stop.clone(), rec.clone());
            thread::spawn(move || worker(client, seed, id, stop, rec))
        })
        .collect();
    let mut rng = support::seed::rng(seed, "disruptions");
    // Lets the load run between disruptions: `n` more calls recorded.
    let load = |n: usize| {
        let until = rec.len() + n;
        wait_until(Duration::from_secs(60), &format!("{n} more lock calls"), || rec.len() >= until);
    };
    let per_step = scale(40, 200);
    let rounds = scale(1, 4);
    for round in 0..rounds {
        load(per_step);
        // Every key's slot moves to another master, one step at a time.
        for n in 0..KEYS {
            let slot = slot_of(&key(n));
            let from = c.owner_of(&key(n));
            let masters = c.masters();
            let to = masters[rng.gen_range(0..masters.len())];
            if to != from {
                c.migrate_slot(slot, from, to);
            }
        }
        c.await_ok();
        load(per_step);
        // And the operator's tool: slots (with their keys) from one master to another.
        let masters = c.masters();
        c.reshard(masters[0], masters[1], scale(200, 1000));
        c.await_ok();
        load(per_step);
        // A coordinated failover of the master of job0.
        let old = c.owner_of(&key(0));
        let replica = c.replica_of(old).expect("a replica");
        c.failover(replica);
        wait_until(Duration::from_secs(30), "the old master steps down", || !c.is_master(old));
        c.await_ok();
        load(per_step);
        // A master killed; its replica takes over; it comes back as a replica.
        let victim = c.owner_of(&key(rng.gen_range(0..KEYS)));
        c.nodes[victim].kill9();
        wait_until(Duration::from_secs(60), "a replica took over the killed master's slots", || {
            let seen_by = c.masters()[0];
            (0..KEYS).all(|n| c.owner_seen_by(seen_by, slot_of(&key(n))).is_some_and(|o| o != victim))
        });
        c.await_ok();
        c.nodes[victim].start_again();
        c.await_ok();
        load(per_step);
        eprintln!("round {round}: moved, failed over, killed and brought back ({} events so far)", rec.len());
    }
    stop.stop();
    for w in workers {
        w.join().expect("a worker panicked");
    }
    let events = rec.events();
    let grants = events.iter().filter(|e| matches!(e.res, Res::Granted(_))).count();
    assert!(grants > 50, "too little load to mean anything: {grants} grants");
    history::assert_clean(&events, "lock load on a cluster while slots move and masters fail");
    for i in 0..c.nodes.len() {
        let mut con = c.conn(i);
        wait_until(Duration::from_secs(5), "no client waits on any node", || {
            module_stat(&mut con, "waiting_clients") == 0
        });
    }
    eprintln!("{} events, {grants} grants", events.len());
}
