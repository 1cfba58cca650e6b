//! Fault suite, bad input (3 of 4): corrupt `DUMP` payloads to `RESTORE`.
//!
//! `corrupt_dump_payloads_are_refused` (default config) and
//! `corrupt_dump_payloads_are_refused_with_sanitize_dump_payload`: DUMPs of every type of
//! ours, truncated at every length, with random byte flips, with flips and the CRC64
//! trailer recomputed (so they reach the module's loaders), with every field set to extreme
//! values, plus handcrafted payloads (`support/input/corrupt.rs`, built with the RDB
//! encoder of `support/input/rdb.rs`, checked first by `crc64_matches_redis_test_vector`).
//! `RESTORE` must answer an error, or OK with a key in a state the commands could have
//! produced; never a crash or a hang.
//!
//! Sizes: `CHAOS_FULL=1` runs everything at full size (`make chaos`); otherwise a short
//! version runs. `CHAOS_SEED=<n>` replays a run: every test prints its seed.

#[path = "support/input/mod.rs"]
mod input;
mod support;

use std::time::{Duration, Instant};

use input::corrupt::*;
use input::generator::{open_conn, Timing};
use input::rdb::crc64;
use support::chaos::full;
use support::seed::{self, repro_env};
use support::server::tail;

#[test]
fn crc64_matches_redis_test_vector() {
    // Redis's own check in crc64.c.
    assert_eq!(crc64(b"123456789"), 0xe9c6_d914_c4b8_d9ca);
}

fn corrupt_restore_suite(test: &str, config: &[&str]) {
    let seed = seed::seed(test);
    let big = full();
    let started = Instant::now();
    let mut target = Harnessed::start(config);
    let t = Timing { hang: Duration::from_secs(10), slack: Duration::from_secs(3), ..Timing::native() };
    let mut setup = open_conn(target.port(), t.hang).unwrap();
    let (m, rw, readers, f) = genuine_dumps(&mut setup, t, 600_000);
    let (sem, sem_all) = genuine_sem_dumps(&mut setup, t, 600_000);
    drop(setup);
    let mut rng = seed::rng(seed, test);
    let mut cases = handcrafted_cases(&m, &rw, &f);
    cases.extend(handcrafted_sem_cases(&sem, &m));
    for d in [&m, &rw, &readers, &f, &sem, &sem_all] {
        cases.extend(field_cases(d));
    }
    for d in [&m, &rw, &readers, &f, &sem, &sem_all] {
        cases.extend(byte_cases(d, &mut rng, big));
    }
    // The genuine payloads themselves go in first and last: the harness must accept them.
    let genuine: Vec<Case> = [&m, &rw, &readers, &f, &sem, &sem_all]
        .iter()
        .map(|d| case(format!("{}: the genuine DUMP", d.name), d.raw.clone(), Expect::Accepted))
        .collect();
    let total = cases.len() + 2 * genuine.len();
    let mut r = Restorer::new(&mut target, t, true, seed::rng(seed, "restorer"));
    r.reload_percent = if big { 25 } else { 10 };
    for c in genuine.iter().chain(&cases).chain(&genuine) {
        r.run(c);
    }
    let (cases_run, accepted) = (r.cases, r.accepted);
    let failed = !r.failures.is_empty();
    let report = r.report();
    drop(r);
    eprintln!("{test}: {cases_run} of {total} payloads restored ({accepted} accepted) in {:?}", started.elapsed());
    if failed {
        panic!("{report}\nseed {seed} (replay: CHAOS_SEED={seed}{}); config {config:?}", repro_env());
    }
    let server = target.server.as_mut().unwrap();
    server.assert_alive();
    let log = server.log();
    assert!(!log.contains("panicked"), "the server log reports a panic:\n{}", tail(&log, 40));
    let stderr = server.stderr_text();
    assert!(!stderr.contains("panicked at"), "the module panicked (caught or not):\n{stderr}");
}

#[test]
fn corrupt_dump_payloads_are_refused() {
    corrupt_restore_suite("corrupt_dump_payloads_are_refused", &[]);
}

#[test]
fn corrupt_dump_payloads_are_refused_with_sanitize_dump_payload() {
    corrupt_restore_suite(
        "corrupt_dump_payloads_are_refused_with_sanitize_dump_payload",
        &["sanitize-dump-payload yes"],
    );
}
