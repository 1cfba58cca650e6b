//! Fault suite, bad input (1 of 4): random commands, one reply each.
//!
//! `random_commands_answer_exactly_once`: the seeded generator of
//! `support/input/generator.rs` (every command of ours, the internal `FENCELOCK.*` ones
//! too, in mixed case, arity 0 to 8, arguments that are empty, binary, 1 MiB long, numbers
//! at and around every limit, malformed numbers, `WAIT` tokens, keys of other types and of
//! each of our types, plus generic Redis commands on lock keys). Every command goes out as
//! raw RESP followed by `PING`, and exactly one reply and then `PONG` must come back, with
//! nothing after. The same commands also run in random MULTI/EXEC blocks and inside `EVAL`
//! (`redis.call`, `redis.pcall`, and sequences), and a phase of random blocking acquires
//! with tiny `WAIT` timeouts, `CLIENT UNBLOCK`, `CLIENT KILL` and disconnects. The server
//! must stay up, answer `PING`, and end with `blocked_clients:0`.
//!
//! The other bad-input suites: `chaos_valgrind` (the same generator under valgrind),
//! `chaos_corrupt_dump` (corrupt `RESTORE` payloads), `chaos_restored_dump` (valid ones).
//!
//! Sizes: `CHAOS_FULL=1` runs everything at full size (`make chaos`); otherwise a short
//! version runs. `CHAOS_SEED=<n>` replays a run: the test prints its seed.

#[path = "support/input/mod.rs"]
mod input;
mod support;

use std::time::{Duration, Instant};

use input::generator::{Chaos, Timing};
use support::chaos::full;
use support::seed;
use support::*;

#[test]
fn random_commands_answer_exactly_once() {
    let seed = seed::seed("random_commands_answer_exactly_once");
    let big = full();
    let mut server = Server::start(&[]);
    let started = Instant::now();
    let mut chaos = Chaos::new("chaos_random_commands", &server, seed, "plain", Timing::native());
    chaos.setup();
    chaos.run_plain(if big { 60_000 } else { 4_000 });
    chaos.run_multi(if big { 3_000 } else { 300 });
    chaos.run_eval(if big { 3_000 } else { 300 });
    chaos.run_blocking(if big { Duration::from_secs(30) } else { Duration::from_secs(3) });
    chaos.finish();
    if !server.is_alive() {
        chaos.fail("the server process is gone");
    }
    server.assert_alive();
    eprintln!("random_commands_answer_exactly_once: {:?} in {:?}", chaos.stats, started.elapsed());
}
