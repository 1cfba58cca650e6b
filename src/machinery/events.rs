//! What Redis tells the module, and what the module does about it: the before-sleep
//! pass that ends due leases and settles noted keys, the server events that move the
//! expiry index, the keyspace events of keys arriving under new names.
//!
//! Work the module does on its own writes and propagates only on a master that Redis
//! does not ask to keep still: while clients are paused for writes (`CLIENT PAUSE`,
//! `FAILOVER`, `CLUSTER FAILOVER`) Redis forbids any propagation (it asserts), so due
//! leases wait, reads report them as over, and the first pass after the pause ends them.

use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Instant;

use redis_module::{Context, ContextFlags, RedisString};

use crate::machinery::clock::now_ms;
use crate::machinery::{clock, cluster, config, effects, expiry, keyspace, stats, store, takeover, waiting};
use crate::ffi::{self, Db, InfoField, ServerEvents};

/// How many due keys a pass takes between looks at the clock: a pass spends at most
/// `fencelock.expiry-slice-us` ending leases (a million leases ending in the same second
/// must not stall the server).
const EXPIRY_BATCH: usize = 32;

/// Subscribes to the server events, and readies the keyspace subscription.
pub fn init(ctx: &Context) -> bool {
    keyspace::init(ctx, ffi::keyspace_callback::<Events>());
    ffi::subscribe_server_events::<Events>(ctx) && ffi::register_info::<Events>(ctx)
}

/// Settles `keys` (each in its database), putting the context's database back after.
fn settle_keys(ctx: &Context, keys: impl IntoIterator<Item = (Db, Box<[u8]>)>, now: i64) {
    let home = ffi::selected_db(ctx);
    for (db, key) in keys {
        if ffi::select_db(ctx, db) {
            store::settle_any(ctx, &RedisString::create_from_slice(ctx.ctx, &key), now);
        }
    }
    ffi::select_db(ctx, home);
}

/// Ends the leases that are due, for at most the expiry slice; the rest is for the next
/// pass. True when it settled any key.
fn end_due_leases(ctx: &Context) -> bool {
    let now = now_ms();
    let started = Instant::now();
    let mut any = false;
    let slice = config::expiry_slice();
    while started.elapsed() < slice {
        let due = expiry::take_due(now, EXPIRY_BATCH);
        if due.is_empty() {
            break;
        }
        any = true;
        settle_keys(ctx, due, now);
    }
    any
}

/// The database a `MOVE` came from, between its `move_from` and `move_to` events.
///
/// Valkey 8.1 hands a subscriber the very client that runs the command and selects the
/// event's database on it without selecting the old one back (fixed in Valkey 9), so
/// after `MOVE key db` the client would be left on `db`. Putting back the database seen
/// at `move_from` undoes that there and changes nothing elsewhere (other servers hand a
/// temporary client). `COPY ... DB db` has only the one event and cannot be undone so.
static MOVED_FROM: AtomicI32 = AtomicI32::new(-1);

struct Events;

impl ServerEvents for Events {
    fn before_sleep(ctx: &Context) {
        // During a pause nothing may be written; arming the timer for a lease already
        // due would only wake the event loop again at once, spinning until it ends.
        if ffi::avoid_replica_traffic() {
            return;
        }
        effects::look_for_stream(ctx, now_ms());
        let mut settled = false;
        if expiry::wants_attention(now_ms()) && ctx.get_flags().contains(ContextFlags::MASTER) {
            settled = end_due_leases(ctx);
            expiry::arm(ctx);
        }
        cluster::share_floor(ctx);
        if takeover::just_ended() {
            waiting::note_queues(None);
        }
        let noted = waiting::take_noted();
        if !noted.is_empty() {
            settle_keys(ctx, noted, now_ms());
            settled = true;
        }
        settled |= waiting::serve_ready(ctx);
        // Redis sends the replies of clients answered here when it next handles unblocked
        // clients, which newer servers do before this hook: go round once more at once.
        if settled {
            expiry::wake(ctx);
        }
    }

    fn role_changed(ctx: &Context, now_master: bool) {
        if now_master {
            takeover::begin(ctx, true);
        }
        effects::stream_may_exist();
        expiry::rearm(ctx);
    }

    fn stream_may_exist() {
        effects::stream_may_exist();
    }

    fn info(for_crash_report: bool) -> Vec<InfoField> {
        if for_crash_report {
            return stats::fields(0, 0, 0, 0, 0);
        }
        let now = now_ms();
        let (clients, keys) = waiting::totals();
        let (index, lag) = expiry::status(now);
        let mut fields = stats::fields(clients, keys, index, lag, clock::with_tokens(|t| t.floor()));
        fields.push(InfoField::Int(c"takeover_grace_left_ms", takeover::remaining_ms()));
        fields.push(InfoField::Int(c"cluster_floors_received", cluster::floors_received()));
        fields
    }

    fn flushing(db: Option<Db>) {
        expiry::clear(db);
        waiting::note_queues(db);
    }

    fn swapped_dbs(a: Db, b: Db) {
        expiry::swap_dbs(a, b);
    }

    fn loaded(ctx: &Context) {
        takeover::begin(ctx, false);
        expiry::arm(ctx);
    }

    fn keyspace(ctx: &Context, event: &[u8], key: &[u8]) {
        match event {
            b"loaded" | b"rename_to" | b"restore" => store::on_arrival(ctx, key),
            b"move_from" => MOVED_FROM.store(ffi::selected_db(ctx), Ordering::Relaxed),
            b"move_to" => {
                store::on_arrival(ctx, key);
                let db = MOVED_FROM.swap(-1, Ordering::Relaxed);
                if db >= 0 {
                    ffi::select_db(ctx, db);
                }
            }
            _ => {}
        }
    }
}
