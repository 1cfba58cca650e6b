//! Figure 1: uncontended throughput. 50 connections, each on its own thread, take locks
//! under names never used before (nobody else wants them), one at a time or 32 per
//! pipeline: acquire for a fixed time, then release every lock taken, then
//! acquire+release pairs for a fixed time.
//!
//! Like with like: every acquire of every contender is a fresh grant (a key that does not
//! exist, so `SET NX` succeeds; never a reentrant `LOCK.ACQUIRE` of a lock the thread
//! already holds, which `SET NX` would refuse), and every release is the holder's. Names
//! are exact, `<tag>:<thread>:<counter>`, not random, so no two acquires can collide; a
//! reply that is not a grant (or a release that does not answer 1) stops the benchmark.

use std::sync::Arc;
use std::time::Instant;

use crate::clients::{OneShot, Scripts};
use crate::report::{metric, Cell, Figure, Unit};
use crate::server::Server;
use crate::util::{connect, dbsize, exec, exec_pipeline, uuid_like};
use crate::Config;

const TTL: u64 = 30_000;

#[derive(Clone, Copy, Debug)]
struct Rates {
    acquire: f64,
    release: f64,
    pairs: f64,
}

/// (start, end, operations) of one thread in one phase.
type Span = (Instant, Instant, u64);

fn rate(spans: &[Span]) -> f64 {
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    let ops: u64 = spans.iter().map(|s| s.2).sum();
    ops as f64 / (end - start).as_secs_f64()
}

fn round(cfg: &Config, server: &Server, c: OneShot, batch: usize, scripts: &Scripts, tag: &str) -> Rates {
    let barrier = Arc::new(crate::util::Gate::new(cfg.fig1_conns));
    let phase = cfg.fig1_phase;
    let handles: Vec<_> = (0..cfg.fig1_conns)
        .map(|t| {
            let barrier = barrier.clone();
            let url = server.url();
            let scripts = scripts.clone();
            let tag = tag.to_string();
            std::thread::spawn(move || -> [Span; 3] {
                let mut con = connect(&url);
                let owner = format!("{}:{t}", uuid_like());
                // Exact names of one width: never reused within a round, and the tag
                // differs between rounds, modes and contenders.
                let mut next = 0u64;
                let mut fresh_keys = |n: usize| -> Vec<String> {
                    (0..n)
                        .map(|_| {
                            next += 1;
                            format!("{tag}:{t:03}:{next:012x}")
                        })
                        .collect()
                };
                barrier.wait();

                // Acquire for `phase`.
                let s1 = Instant::now();
                let deadline = s1 + phase;
                let mut held: Vec<String> = Vec::new();
                while Instant::now() < deadline {
                    let keys = fresh_keys(batch);
                    let cmds: Vec<_> = keys.iter().map(|k| c.acquire(k, &owner, TTL, &scripts)).collect();
                    if batch == 1 {
                        let v = exec(&mut con, &cmds[0]);
                        c.check_acquire(&cmds[0], &v);
                    } else {
                        for (cmd, v) in cmds.iter().zip(exec_pipeline(&mut con, &cmds)) {
                            c.check_acquire(cmd, &v);
                        }
                    }
                    held.extend(keys);
                }
                let acquired = (s1, Instant::now(), held.len() as u64);
                barrier.wait();

                // Release everything taken.
                let s2 = Instant::now();
                for keys in held.chunks(batch) {
                    let cmds: Vec<_> = keys.iter().map(|k| c.release(k, &owner, TTL, &scripts)).collect();
                    if batch == 1 {
                        let v = exec(&mut con, &cmds[0]);
                        c.check_release(&cmds[0], &v);
                    } else {
                        for (cmd, v) in cmds.iter().zip(exec_pipeline(&mut con, &cmds)) {
                            c.check_release(cmd, &v);
                        }
                    }
                }
                let released = (s2, Instant::now(), held.len() as u64);
                barrier.wait();

                // Acquire+release pairs for `phase` (pipelined: 32 pairs, 64 commands).
                let s3 = Instant::now();
                let deadline = s3 + phase;
                let mut pairs = 0u64;
                while Instant::now() < deadline {
                    let keys = fresh_keys(batch);
                    let mut cmds = Vec::with_capacity(2 * batch);
                    for k in &keys {
                        cmds.push(c.acquire(k, &owner, TTL, &scripts));
                        cmds.push(c.release(k, &owner, TTL, &scripts));
                    }
                    let replies = if batch == 1 {
                        vec![exec(&mut con, &cmds[0]), exec(&mut con, &cmds[1])]
                    } else {
                        exec_pipeline(&mut con, &cmds)
                    };
                    for (i, (cmd, v)) in cmds.iter().zip(replies.iter()).enumerate() {
                        if i % 2 == 0 {
                            c.check_acquire(cmd, v);
                        } else {
                            c.check_release(cmd, v);
                        }
                    }
                    pairs += batch as u64;
                }
                [acquired, released, (s3, Instant::now(), pairs)]
            })
        })
        .collect();
    let spans: Vec<[Span; 3]> = handles.into_iter().map(|h| h.join().expect("a figure-1 client failed")).collect();
    let phase_rate = |i: usize| rate(&spans.iter().map(|s| s[i]).collect::<Vec<_>>());
    Rates { acquire: phase_rate(0), release: phase_rate(1), pairs: phase_rate(2) }
}

pub fn run(cfg: &Config, server: &mut Server, scripts: &Scripts) -> Vec<Figure> {
    let modes = [(1usize, "1a", "not pipelined"), (32usize, "1b", "pipelined, 32 per batch")];
    let mut results: Vec<Vec<Vec<Rates>>> = vec![vec![vec![]; OneShot::ALL.len()]; modes.len()];
    let mut con = server.conn();
    for r in 0..cfg.fig1_rounds {
        for (mi, (batch, id, _)) in modes.iter().enumerate() {
            for k in 0..OneShot::ALL.len() {
                let ci = (k + r) % OneShot::ALL.len();
                let c = OneShot::ALL[ci];
                let rates = round(cfg, server, c, *batch, scripts, &format!("f1:{r}:{mi}:{ci}"));
                server.assert_alive();
                let left = dbsize(&mut con);
                assert_eq!(left, 0, "WRONG RESULT: {} left {left} keys behind after releasing every lock", c.name());
                eprintln!(
                    "  fig {id} round {}/{}: {:<45} acquire {:>9.0}/s  release {:>9.0}/s  pairs {:>9.0}/s",
                    r + 1,
                    cfg.fig1_rounds,
                    c.name(),
                    rates.acquire,
                    rates.release,
                    rates.pairs
                );
                results[mi][ci].push(rates);
            }
        }
    }
    modes
        .iter()
        .enumerate()
        .map(|(mi, (batch, id, how))| {
            let mut f = Figure::new(
                id,
                &format!("Uncontended throughput, {how} ({} connections, lock names never used before)", cfg.fig1_conns),
                vec![
                    metric("acquire", Unit::Rate, true),
                    metric("release", Unit::Rate, true),
                    metric("acquire+release pair", Unit::Rate, true),
                ],
            );
            for (ci, c) in OneShot::ALL.iter().enumerate() {
                let rs = &results[mi][ci];
                f.row(
                    c.name(),
                    vec![
                        Some(Cell::median_of(rs.iter().map(|x| x.acquire).collect())),
                        Some(Cell::median_of(rs.iter().map(|x| x.release).collect())),
                        Some(Cell::median_of(rs.iter().map(|x| x.pairs).collect())),
                    ],
                );
            }
            f.notes.push(format!(
                "Operations per second over all {} connections, median of {} rounds of {} ms per phase: acquire for the phase, \
                 release every lock taken, then acquire+release pairs{}. Every acquire must be granted and every release must \
                 answer 1.",
                cfg.fig1_conns,
                cfg.fig1_rounds,
                cfg.fig1_phase.as_millis(),
                if *batch > 1 { " (32 pairs, 64 commands, per pipeline)" } else { " (two round trips each)" }
            ));
            f.notes.push(
                "Like with like: every acquire is of a name never used before (exact names `<tag>:<thread>:<counter>`, no \
                 random collisions), so `LOCK.ACQUIRE key owner 30000` is a fresh grant against a successful \
                 `SET key owner NX PX 30000` (never a reentrant acquire against a failing `SET NX`); every release is by the \
                 holder (`LOCK.RELEASE key owner` against the compare-and-delete `EVALSHA`, both answering 1). Figure 8 \
                 measures the same pairs as server CPU per request."
                    .into(),
            );
            f.notes.push(
                "The floor is not a lock: plain `SET key owner` and `DEL key`, the cost of touching the same keys at all.".into(),
            );
            f
        })
        .collect()
}
