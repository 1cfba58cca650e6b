//! The machinery every lock kind plugs into, below the command files.
//!
//! Layers, each using only those above it in this list:
//! - `config`: the module's configs (`fencelock.*` in `CONFIG GET`); `stats`: the
//!   counters `INFO fencelock` shows; `announce`: what a grant or release reports
//!   (counters and keyspace events).
//! - `clock`: the server's wall clock and the token clock.
//! - `cluster`: where a cluster node may grant, and the token floor the nodes share;
//!   `takeover`: the grace after a promotion or a start that may have lost grants.
//! - `kind`: what the machinery knows of a lock kind (the `Kind` trait), the registry of
//!   kinds, and what a blocked acquire must be able to do (`Request`).
//! - `effects`: replicated effects.
//! - `expiry`: the expiry index and the timer that wakes the event loop for it.
//! - `waiting`: clients blocked on a key, in arrival order, served by the module.
//! - `commands`: the command table, its registration, and the entry every command runs
//!   through (which serves the waiters the command let in).
//! - `store`: the one way a key of any kind is read, changed, stored, propagated and
//!   settled.
//! - `keyspace`, `events`: what Redis tells the module (server events, keyspace events),
//!   which drive expiry and waiting through the store.
//!
//! Global state lives in `clock`, `expiry`, `waiting` and `keyspace`, each private to its
//! module behind functions that never call Redis while they hold it: Redis calls back
//! into the module synchronously (the unlink hook, keyspace events), and a callback that
//! found the state locked by its own caller would deadlock.

pub mod announce;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod effects;
pub mod events;
pub mod expiry;
pub mod keyspace;
pub mod kind;
pub mod stats;
pub mod store;
pub mod takeover;
pub mod waiting;
