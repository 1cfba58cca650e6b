//! Fault suite, bad input (2 of 4): the random command generator and the loaders' error
//! paths under valgrind.
//!
//! `random_commands_under_valgrind`: the generator of `chaos_random_commands` (smaller) and
//! the corrupt-payload cases of `chaos_corrupt_dump` that exercise the loaders' error
//! paths, against `redis-server` under `valgrind --leak-check=full`
//! (`support/input/valgrind.rs`); after `SHUTDOWN NOSAVE` the log must say `ERROR SUMMARY:
//! 0 errors`, with no definitely lost block from the module. It needs a server whose malloc
//! valgrind can see (Debian's redis-server, or a `MALLOC=libc` build): `make compat` skips
//! it by name elsewhere.
//!
//! Sizes: `CHAOS_FULL=1` runs everything at full size (`make chaos`); otherwise a short
//! version runs. `CHAOS_SEED=<n>` replays a run: the test prints its seed.

#[path = "support/input/mod.rs"]
mod input;
mod support;

use std::time::{Duration, Instant};

use input::corrupt::*;
use input::generator::{open_conn, Chaos, Timing};
use input::rdb::seal;
use input::valgrind::{self, mentions_module, vg_blocks, VG_ERROR_KINDS};
use support::chaos::full;
use support::seed::{self, repro_env, Dice};
use support::server::tail;

#[test]
fn random_commands_under_valgrind() {
    let seed = seed::seed("random_commands_under_valgrind");
    let big = full();
    let started = Instant::now();
    let mut vg = valgrind::start();
    eprintln!("random_commands_under_valgrind: server up after {:?}", started.elapsed());
    let t = Timing::valgrind();
    let mut chaos = Chaos::new("chaos_valgrind", &vg, seed, "valgrind", t);
    chaos.setup();
    chaos.run_plain(if big { 8_000 } else { 300 });
    chaos.run_multi(if big { 800 } else { 30 });
    chaos.run_eval(if big { 800 } else { 30 });
    chaos.run_blocking(if big { Duration::from_secs(30) } else { Duration::from_secs(3) });
    chaos.finish();
    let stats = format!("{:?}", chaos.stats);
    drop(chaos);
    eprintln!("random_commands_under_valgrind: generator done after {:?}", started.elapsed());

    // The loaders' error paths: every truncation point (CRC recomputed) of every type,
    // the handcrafted payloads and the field corruptions. Here only memory, crashes,
    // hangs and reply counts count; the state of accepted keys is judged by the native
    // suites, which restore the same payloads.
    let mut rng = seed::rng(seed, "valgrind restore");
    let (cases, judged) = {
        let mut setup = open_conn(vg.port, t.hang).unwrap();
        let (m, rw, readers, f) = genuine_dumps(&mut setup, t, 600_000);
        let (sem, sem_all) = genuine_sem_dumps(&mut setup, t, 600_000);
        let mut cases = handcrafted_cases(&m, &rw, &f);
        cases.extend(handcrafted_sem_cases(&sem, &m));
        for d in [&m, &rw, &readers, &f, &sem, &sem_all] {
            cases.extend(field_cases(d));
            let body = d.body();
            let payload = &body[..body.len() - 2];
            for n in 0..payload.len() {
                let mut b = payload[..n].to_vec();
                b.extend_from_slice(&d.version);
                cases.push(case(
                    format!("{}: payload truncated to {n} bytes, CRC recomputed", d.name),
                    seal(&b),
                    Expect::Any,
                ));
            }
            cases.push(case(format!("{}: the genuine DUMP", d.name), d.raw.clone(), Expect::Accepted));
        }
        if !big {
            // A seeded sample keeps the short run short.
            for k in 0..cases.len() {
                let j = k + rng.below(cases.len() - k);
                cases.swap(k, j);
            }
            cases.truncate(150);
        }
        (cases, big)
    };
    let mut r = Restorer::new(&mut vg, t, false, seed::rng(seed, "valgrind restorer"));
    r.reload_percent = if judged { 5 } else { 3 };
    r.max_failures = 1;
    for c in &cases {
        r.run(c);
    }
    let restored = (r.cases, r.accepted);
    drop(r);
    eprintln!(
        "random_commands_under_valgrind: {} payloads restored ({} accepted) after {:?}",
        restored.0,
        restored.1,
        started.elapsed()
    );

    let status = valgrind::shutdown(&mut vg);
    eprintln!("random_commands_under_valgrind: valgrind exited ({status}) after {:?}", started.elapsed());
    let logs = valgrind::logs(&vg);
    assert!(!logs.is_empty(), "no valgrind log in {}", vg.dir.display());
    let mut problems = Vec::new();
    let mut saw_heap = false;
    for (path, text) in &logs {
        let summary = text.lines().rev().find_map(|l| l.split_once("ERROR SUMMARY: ").map(|(_, s)| s.to_string()));
        let Some(summary) = summary else {
            problems.push(format!(
                "{}: no ERROR SUMMARY (valgrind did not finish?)\n{}",
                path.display(),
                tail(text, 30)
            ));
            continue;
        };
        if let Some(allocs) = text.lines().find_map(|l| l.split_once("total heap usage: ").map(|(_, s)| s.to_string()))
        {
            let n: u64 = allocs.split_whitespace().next().unwrap_or("0").replace(',', "").parse().unwrap_or(0);
            saw_heap |= n > 10_000;
        }
        let blocks = vg_blocks(text);
        let errors: Vec<&String> = blocks.iter().filter(|b| VG_ERROR_KINDS.iter().any(|k| b.contains(k))).collect();
        let ours: Vec<&&String> = errors.iter().filter(|b| mentions_module(b)).collect();
        let definite_ours = ours.iter().filter(|b| b.contains("definitely lost")).count();
        if !summary.starts_with("0 errors") || definite_ours > 0 {
            let mut shown: Vec<&String> = ours.iter().map(|b| **b).collect();
            shown.extend(errors.iter().filter(|b| !mentions_module(b)).copied());
            problems.push(format!(
                "{}: ERROR SUMMARY: {summary}; {} error block(s), {} from the module ({definite_ours} definitely lost)\n{}",
                path.display(),
                errors.len(),
                ours.len(),
                shown.iter().take(6).map(|b| b.as_str()).collect::<Vec<_>>().join("\n\n")
            ));
        }
    }
    assert!(
        saw_heap,
        "valgrind saw fewer than 10000 allocations: it does not track the server's allocator, so it cannot see leaks"
    );
    assert!(
        problems.is_empty(),
        "valgrind found problems (seed {seed}; replay: CHAOS_SEED={seed}{}):\n{}",
        repro_env(),
        problems.join("\n\n")
    );
    assert_eq!(status.code(), Some(0), "valgrind exited with {status} (99: errors)");
    eprintln!("random_commands_under_valgrind: {stats}; clean in {:?}", started.elapsed());
}
