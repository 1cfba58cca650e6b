//! Redis Cluster: where this node may grant, and the token floor every node shares.
//!
//! - Redis routes a client's command before it runs (-MOVED, -ASK), but the module
//!   grants waiters outside their commands: when a lease ends, or the key was removed.
//!   A slot migration removes the key from the source node (`MIGRATE`), which looks like
//!   a `DEL` with clients waiting; granting them there would make a second holder beside
//!   the one whose lock just moved. So a waiter is granted, and a free lock's key revived
//!   for its waiters, only where Redis would run that client's write now. Elsewhere the
//!   key is put aside and looked at again every `RETRY`; meanwhile Redis redirects its
//!   blocked clients (-MOVED once the slot has moved, as for its own blocking commands),
//!   and they queue again at the new owner.
//! - A free lock leaves no key, so nothing of it moves with its slot, and a new owner
//!   (an importing node, a promoted replica) would issue tokens from its own clock and
//!   floor only. Every node therefore sends its token floor to every other over the
//!   cluster bus, within `SHARE_EVERY` of a change (and every `RESEND` regardless, for
//!   nodes that joined since), and raises its own to any floor it receives.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis_module::{Context, ContextFlags, RedisString};

use crate::ffi;
use crate::machinery::clock;

/// The module's cluster-bus message that carries a token floor (8 bytes, big-endian).
const FLOOR_MESSAGE: u8 = 1;
/// A changed floor is sent at most this often.
const SHARE_EVERY: Duration = Duration::from_millis(10);
/// An unchanged floor is sent again this often.
const RESEND: Duration = Duration::from_secs(1);
/// Keys put aside because another node serves them are looked at again this often.
pub const RETRY: Duration = Duration::from_millis(100);

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The floor last sent, and when.
static SENT: Mutex<Option<(i64, Instant)>> = Mutex::new(None);
/// Floors received from other nodes (for `INFO`).
static RECEIVED: AtomicI64 = AtomicI64::new(0);

/// At load: whether this server is a cluster node, and if so the floor receiver.
pub fn init(ctx: &Context) -> bool {
    let enabled = ctx.get_flags().contains(ContextFlags::CLUSTER);
    ENABLED.store(enabled, Relaxed);
    !enabled || ffi::register_cluster_receiver(ctx, FLOOR_MESSAGE, receive_floor)
}

pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// True when this node may grant at `key` (in the selected db) now: outside a cluster
/// always; in one, when Redis would run a client's write to `key` here.
pub fn serves(ctx: &Context, key: &RedisString) -> bool {
    !enabled() || ffi::routes_here(ctx, key)
}

/// Sends the token floor to the other nodes when it changed (or is due again). Called
/// from every before-sleep pass, so it must cost nothing when there is nothing to send.
pub fn share_floor(ctx: &Context) {
    if !enabled() {
        return;
    }
    let floor = clock::with_tokens(|t| t.floor());
    let mut sent = SENT.lock().unwrap_or_else(|p| p.into_inner());
    let due = match *sent {
        None => true,
        Some((last, at)) => {
            let since = at.elapsed();
            (last != floor && since >= SHARE_EVERY) || since >= RESEND
        }
    };
    if due && floor > 0 {
        *sent = Some((floor, Instant::now()));
        drop(sent);
        ffi::broadcast_cluster_message(ctx, FLOOR_MESSAGE, &floor.to_be_bytes());
    }
}

fn receive_floor(_sender: &[u8], payload: &[u8]) {
    let Ok(bytes) = <[u8; 8]>::try_from(payload) else { return };
    RECEIVED.fetch_add(1, Relaxed);
    clock::observe(i64::from_be_bytes(bytes));
}

/// How many floors other nodes sent this one.
pub fn floors_received() -> i64 {
    RECEIVED.load(Relaxed)
}
