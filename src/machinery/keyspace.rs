//! The keyspace subscription, taken only when it is needed.
//!
//! Redis calls a module's keyspace subscriber for every event of the classes it asked
//! for, among them the `expire` event of every `SET ... PX` any client sends: a
//! subscription costs the whole server, not only our commands. The module needs it only
//! for lock keys that arrive under a name the expiry index does not know (RENAME, MOVE,
//! RESTORE, loading), so it subscribes once it has had a lock key: when one of its
//! commands runs, or a value of its types is loaded. Key removals need no event: the
//! types' unlink hook sees every one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use redis_module::Context;

use crate::ffi::{self, KeyspaceCallback, ModuleContext};

static SUBSCRIBED: AtomicBool = AtomicBool::new(false);

/// A context of the module's own, for subscribing where Redis hands us none.
static MODULE_CTX: ModuleContext = ModuleContext::new();

static CALLBACK: OnceLock<KeyspaceCallback> = OnceLock::new();

/// At load: the callback to subscribe, and a context to subscribe with later.
pub fn init(ctx: &Context, callback: KeyspaceCallback) {
    MODULE_CTX.init(ctx);
    let _ = CALLBACK.set(callback);
}

/// Subscribes the first time it is called. Cheap enough for every command.
pub fn subscribe_once() {
    if SUBSCRIBED.load(Ordering::Relaxed) {
        return;
    }
    let Some(callback) = CALLBACK.get() else { return };
    if MODULE_CTX.subscribe_keyspace(ffi::ARRIVAL_CLASSES, *callback) {
        SUBSCRIBED.store(true, Ordering::Relaxed);
    }
}
