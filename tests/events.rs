//! Keyspace notifications: with `notify-keyspace-events` holding `d` (module events; `A`
//! includes it) every change fires an event named like the command family, in the order
//! it happened: `lock.acquire`, `lock.release`, `lock.handoff` (a grant to a waiter),
//! `lock.expired` (the server ended a lease: the holder's lost-lock notification), the
//! same for `rwlock.*` and `sem.*`, `fence.next`, and the generic `del` when a key goes.
//! Nothing fires when notifications are off, and a replica fires none of its own.

mod support;

use std::time::Duration;

use support::*;

/// A connection subscribed to every key event of every database.
struct Events {
    con: redis::Connection,
}

impl Events {
    fn subscribe(s: &Server) -> Events {
        let mut con = s.conn();
        redis::cmd("PSUBSCRIBE").arg("__keyevent@*__:*").exec(&mut con).expect("PSUBSCRIBE");
        Events { con }
    }

    /// The events since the last call, as (event, key), up to a marker published now
    /// (through `c`, a connection to the same server).
    fn take(&mut self, c: &mut redis::Connection) -> Vec<(String, String)> {
        let _: i64 = redis::cmd("PUBLISH").arg("__keyevent@0__:end-of-test-step").arg("-").query(c).expect("PUBLISH");
        self.con.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        let mut events = vec![];
        loop {
            let msg = self.con.recv_response().expect("a pub/sub message");
            let redis::Value::Array(parts) = msg else { continue };
            // pmessage, pattern, channel, payload
            let text: Vec<String> = parts.iter().filter_map(value_text).collect();
            if text.len() != 4 || text[0] != "pmessage" {
                continue;
            }
            let event = text[2].rsplit(':').next().unwrap().to_string();
            if event == "end-of-test-step" {
                return events;
            }
            events.push((event, text[3].clone()));
        }
    }
}

fn ev(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(e, k)| (e.to_string(), k.to_string())).collect()
}

fn notify_all(c: &mut redis::Connection) {
    ok(c, &["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
}

#[test]
fn a_mutex_announces_grants_releases_handoffs_lease_ends_and_removals() {
    let s = Server::new();
    let mut c = s.conn();
    notify_all(&mut c);
    let mut events = Events::subscribe(&s);

    grant(&mut c, "a", "holder", LONG_TTL);
    grant(&mut c, "a", "holder", LONG_TTL);
    assert_eq!(events.take(&mut c), ev(&[("lock.acquire", "a"), ("lock.acquire", "a")]), "a grant and a re-entry");

    let mut w = Waiter::lock(&s, "a", "waiter", LONG_TTL, 0);
    await_blocked(&mut c, 1);
    assert_eq!(release(&mut c, "a", "holder"), 1);
    assert_eq!(release(&mut c, "a", "holder"), 1);
    w.granted();
    assert_eq!(release(&mut c, "a", "waiter"), 1);
    assert_eq!(release(&mut c, "a", "nobody"), 0);
    assert_eq!(
        events.take(&mut c),
        ev(&[("lock.release", "a"), ("lock.release", "a"), ("lock.handoff", "a"), ("lock.release", "a"), ("del", "a")]),
        "two releases, the handoff, the waiter's release; a refused release is silent"
    );

    grant(&mut c, "short", "alice", 50);
    wait_until(Duration::from_secs(5), "the lease ends", || dbsize(&mut c) == 0);
    assert_eq!(events.take(&mut c), ev(&[("lock.acquire", "short"), ("lock.expired", "short"), ("del", "short")]));

    grant(&mut c, "c", "alice", LONG_TTL);
    let mut w = Waiter::lock(&s, "c", "bob", LONG_TTL, 0);
    await_blocked(&mut c, 1);
    ok(&mut c, &["DEL", "c"]);
    w.granted();
    assert_eq!(events.take(&mut c), ev(&[("lock.acquire", "c"), ("del", "c"), ("lock.handoff", "c")]), "DEL with a waiter");

    // A lease found over by the next acquire ends there.
    ok(&mut c, &["DEBUG", "SET-ACTIVE-EXPIRE", "0"]);
    grant(&mut c, "d", "alice", 30);
    let_time_pass(60);
    grant(&mut c, "d", "bob", LONG_TTL);
    let got = events.take(&mut c);
    assert_eq!(got.first(), Some(&("lock.acquire".to_string(), "d".to_string())));
    assert_eq!(got.last(), Some(&("lock.acquire".to_string(), "d".to_string())));
    assert!(got.contains(&("lock.expired".to_string(), "d".to_string())), "{got:?}");
}

#[test]
fn read_write_locks_semaphores_and_fences_announce_theirs() {
    let s = Server::new();
    let mut c = s.conn();
    notify_all(&mut c);
    let mut events = Events::subscribe(&s);
    raws(&mut c, &["RWLOCK.RLOCK", "rw", "r1", "60000"]);
    raws(&mut c, &["RWLOCK.RUNLOCK", "rw", "r1"]);
    raws(&mut c, &["RWLOCK.WLOCK", "rw", "w1", "60000"]);
    raws(&mut c, &["SEM.ACQUIRE", "s", "a", "2", "60000"]);
    raws(&mut c, &["SEM.RELEASE", "s", "a"]);
    raws(&mut c, &["FENCE.NEXT", "f"]);
    assert_eq!(
        events.take(&mut c),
        ev(&[
            ("rwlock.acquire", "rw"),
            ("rwlock.release", "rw"),
            ("del", "rw"),
            ("rwlock.acquire", "rw"),
            ("sem.acquire", "s"),
            ("sem.release", "s"),
            ("del", "s"),
            ("fence.next", "f"),
        ])
    );
}

#[test]
fn nothing_fires_while_notifications_are_off() {
    let s = Server::new();
    let mut c = s.conn();
    let mut events = Events::subscribe(&s);
    grant(&mut c, "a", "alice", 50);
    raws(&mut c, &["FENCE.NEXT", "f"]);
    wait_until(Duration::from_secs(5), "the lease ends", || dbsize(&mut c) == 1);
    assert_eq!(events.take(&mut c), vec![]);
}

#[test]
fn a_replica_fires_no_lock_events_of_its_own() {
    let master = Server::start(&["repl-diskless-sync-delay 0"]);
    let replica = start_synced_replica(&master);
    let mut m = master.conn();
    let mut r = replica.conn();
    notify_all(&mut m);
    notify_all(&mut r);
    let mut on_replica = Events::subscribe(&replica);
    grant(&mut m, "a", "alice", LONG_TTL);
    assert_eq!(release(&mut m, "a", "alice"), 1);
    grant(&mut m, "short", "alice", 50);
    raws(&mut m, &["FENCE.NEXT", "f"]);
    wait_until(Duration::from_secs(5), "the lease ends", || dbsize(&mut m) == 1);
    await_sync(&master, &replica);
    // The master's DELs run on the replica as commands and fire Redis's own `del`.
    assert_eq!(on_replica.take(&mut r), ev(&[("del", "a"), ("del", "short")]));
}
