//! The test harness of fencelock's integration tests and of the bench: every test file
//! has `mod support;` and `use support::*;` (the bench mounts the same tree with
//! `#[path = "../tests/support/mod.rs"] mod support;`). Three heavier parts of the tree
//! are mounted only by the tests that use them, beside `mod support;`, so that every other
//! test binary compiles without them: `#[path = "support/history.rs"] mod history;` (the
//! history checker; with it, `#[path = "support/blocked_chaos.rs"] mod blocked_chaos;` in
//! the blocked-client chaos tests), `#[path = "support/kinds.rs"] mod kinds;` (durability,
//! replication) and `#[path = "support/input/mod.rs"] mod input;` (the bad-input suites).
//!
//! What is here, in one place each:
//!
//! - [`server`]: the one `redis-server` launcher ([`Server`], [`Options`]): config lines,
//!   replicas, restart, `kill -9`, extra environment, a wrapper command, no module; and
//!   the module itself, built from the current sources unless `FENCELOCK_MODULE` names one.
//! - [`resp`]: the one raw RESP client ([`Raw`], [`Reply`]) for protocol work.
//! - [`cmd`]: commands through the `redis` crate, `INFO`, waiting for conditions,
//!   persistence and replication in sync.
//! - [`locks`]: `LOCK.*`, `RWLOCK.*`, `FENCE.*` and `SEM.*` helpers and their replies parsed.
//! - [`waiter`]: [`Waiter`], a client blocked in a command whose reply comes later.
//! - `kinds.rs` (mounted as `kinds`): every lock kind behind one trait, for the tests
//!   organised by concern (durability, replication) that cover each kind.
//! - [`seed`]: printed, replayable seeds (`CHAOS_SEED`) for `rand`'s `StdRng`.
//! - [`chaos`], [`fault_kit`], [`faketime`]: run sizes, faults (signals, child
//!   processes, token order), the libfaketime clock; `history.rs` (mounted as `history`):
//!   the fault suite's history checker; `blocked_chaos.rs` (mounted as `blocked_chaos`,
//!   beside `history`): the blocked-client chaos workload and its rules, for every kind
//!   that blocks (`chaos_blocked`, `chaos_sem_blocked`).
//! - `input/` (mounted as `input`): the bad-input suites' random command generator, RDB
//!   encoder, corrupt `RESTORE` payloads and valgrind checks.

#![allow(dead_code, unused_imports)]

pub mod chaos;
pub mod cmd;
pub mod faketime;
pub mod fault_kit;
pub mod locks;
pub mod resp;
pub mod seed;
pub mod server;
pub mod waiter;

pub use cmd::*;
pub use locks::*;
pub use resp::{Raw, Reply};
pub use server::{module_path, redis_server_bin, Options, Server};
pub use waiter::{queue, queue_blocked, queue_in, queue_reader_then_writer, queue_sem, Waiter};
