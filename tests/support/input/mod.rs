//! The bad-input suites' tools (`chaos_random_commands`, `chaos_valgrind`,
//! `chaos_corrupt_dump`, `chaos_restored_dump`), mounted by those tests with
//! `#[path = "support/input/mod.rs"] mod input;` beside `mod support;`:
//!
//! - [`generator`]: the random command generator and its checks of what a reply may be.
//! - [`rdb`]: the RDB encoding of the module's values (`DUMP` payloads taken apart and
//!   built again).
//! - [`corrupt`]: corrupt `RESTORE` payloads and their judge.
//! - [`valgrind`]: the server under valgrind and the reading of its logs.

#![allow(dead_code, unused_imports)]

pub mod corrupt;
pub mod generator;
pub mod rdb;
pub mod valgrind;
