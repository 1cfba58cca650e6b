//! `make bench`: fencelock against the locks people use instead, from one run on one
//! machine.
//!
//! Starts its own `redis-server` with the module on a free loopback port and measures
//! every contender against the same server in alternating short rounds (fresh servers
//! for the memory figure, and servers with and without the module for figure 6), then
//! prints a markdown table of medians and of fencelock's advantage over each contender,
//! and writes it to `target/bench/results.md` with a JSON twin in
//! `target/bench/results.json`.
//!
//! Contenders: fencelock (`LOCK.*`, `RWLOCK.*`); `SET key owner NX PX ttl` with the
//! compare-and-delete Lua release and client-side retry (1 ms, or Redlock's random
//! 50-250 ms); a Redisson-style reentrant hash lock in Lua with pub/sub waiting (and
//! its read-write sibling); and the floor, plain `SET`/`DEL`. Figure 7 sets fencelock's
//! counting semaphore (`SEM.*`) against a Redisson-style semaphore with expirable
//! permits in Lua whose waiters subscribe to its channel and retry.
//!
//! Like with like: figure 1 sets fresh grants against successful `SET NX PX` and the
//! holder's release against the compare-and-delete `EVALSHA`, on names never used
//! before. Figure 2 is contention on one lock at 4, 16, 64 and 256 clients (handoffs/s,
//! server CPU per handoff, p99 and longest wait, clients served). Figure 8 is server CPU
//! per request of each fencelock command against the native command with the same
//! outcome (a fresh grant against a successful `SET NX PX`, a refused acquire against a
//! failing one, `LOCK.RELEASE` against the `EVALSHA` compare-and-delete), pipelined on
//! exact keys, on three fresh servers: plain, `appendonly yes` (everysec), and with one
//! replica attached (the master's CPU only).
//!
//! `BENCH_QUICK=1` (what `make test` runs) uses tiny sizes so the harness can't rot: it
//! exercises every contender and figure, asserts no timings, and fails (non-zero exit)
//! on any wrong result. `BENCH_ONLY=1,3` runs only some figures (for development;
//! `BENCH_ONLY=7` is the semaphore figure, `BENCH_ONLY=8` the like-with-like CPU figure).
//!
//! Figure 6 is the module's cost on commands that are not its own (native `SET ... PX`
//! and `GET`), on three fresh servers: without the module, with it loaded but unused,
//! and with it loaded and in use.

#[path = "support/clients.rs"]
mod clients;
#[path = "support/fig1.rs"]
mod fig1;
#[path = "support/fig2.rs"]
mod fig2;
#[path = "support/fig3.rs"]
mod fig3;
#[path = "support/fig4.rs"]
mod fig4;
#[path = "support/fig5.rs"]
mod fig5;
#[path = "support/fig6.rs"]
mod fig6;
#[path = "support/fig7.rs"]
mod fig7;
#[path = "support/fig8.rs"]
mod fig8;
#[path = "support/report.rs"]
mod report;
#[path = "support/server.rs"]
mod server;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "support/util.rs"]
mod util;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use report::{fmt_ratio, fmt_value, Figure, Goal, Report, Unit};

/// Sizes and durations; `quick()` for `BENCH_QUICK=1`.
pub struct Config {
    pub quick: bool,
    pub fig1_rounds: usize,
    pub fig1_conns: usize,
    pub fig1_phase: Duration,
    pub fig2_rounds: usize,
    pub fig2_round: Duration,
    pub fig2_clients: Vec<usize>,
    pub fig3_rounds: usize,
    pub fig3_pairs: usize,
    pub fig3_budget: Duration,
    pub fig4_locks: usize,
    pub fig4_conns: usize,
    pub fig4_batch: usize,
    pub fig4_expiry_limit: Duration,
    pub fig5_rounds: usize,
    pub fig5_readers: usize,
    pub fig5_round: Duration,
    pub fig5_writer_pause: Duration,
    /// Sets of the three servers (no module, unused, in use), used in turn.
    pub fig6_sets: usize,
    pub fig6_rounds: usize,
    pub fig6_conns: usize,
    pub fig6_batch: usize,
    /// Requests per server per workload per round.
    pub fig6_requests: usize,
    pub fig6_get_keys: usize,
    /// Rounds of figure 7 (semaphores); each round runs 7a, 7b and 7c for every contender.
    pub fig7_rounds: usize,
    /// 7a: connections, each on its own semaphore, and the length of a round.
    pub fig7_conns: usize,
    pub fig7_phase: Duration,
    /// 7b: clients on one semaphore; 7c: small (COUNT 1) clients beside the large one.
    pub fig7_clients: usize,
    pub fig7_fair_small: usize,
    pub fig7_limit: u64,
    /// Length of a 7b or 7c round, and the work done while holding a permit.
    pub fig7_round: Duration,
    pub fig7_work: Duration,
    /// Figure 8 (server CPU per request, like with like): rounds per setup, connections,
    /// requests per pipeline, and requests per measurement (over all connections).
    pub fig8_rounds: usize,
    pub fig8_conns: usize,
    pub fig8_batch: usize,
    pub fig8_requests: usize,
}

impl Config {
    fn full() -> Config {
        Config {
            quick: false,
            fig1_rounds: 7,
            fig1_conns: 50,
            fig1_phase: Duration::from_millis(250),
            fig2_rounds: 3,
            fig2_round: Duration::from_millis(1500),
            fig2_clients: vec![4, 16, 64, 256],
            fig3_rounds: 3,
            fig3_pairs: 4,
            fig3_budget: Duration::from_millis(1200),
            fig4_locks: 1_000_000,
            fig4_conns: 4,
            fig4_batch: 500,
            fig4_expiry_limit: Duration::from_secs(30),
            fig5_rounds: 3,
            fig5_readers: 64,
            fig5_round: Duration::from_millis(2000),
            fig5_writer_pause: Duration::from_millis(10),
            fig6_sets: 3,
            fig6_rounds: 15,
            fig6_conns: 4,
            fig6_batch: 100,
            fig6_requests: 60_000,
            fig6_get_keys: 50_000,
            fig7_rounds: 3,
            fig7_conns: 32,
            fig7_phase: Duration::from_millis(500),
            fig7_clients: 64,
            fig7_fair_small: 16,
            fig7_limit: 8,
            fig7_round: Duration::from_millis(1500),
            fig7_work: Duration::from_micros(100),
            fig8_rounds: 9,
            fig8_conns: 4,
            fig8_batch: 100,
            fig8_requests: 60_000,
        }
    }

    fn quick() -> Config {
        Config {
            quick: true,
            fig1_rounds: 2,
            fig1_conns: 8,
            fig1_phase: Duration::from_millis(40),
            fig2_rounds: 1,
            fig2_round: Duration::from_millis(300),
            fig2_clients: vec![4, 16],
            fig3_rounds: 1,
            fig3_pairs: 2,
            fig3_budget: Duration::from_millis(150),
            fig4_locks: 5_000,
            fig4_conns: 2,
            fig4_batch: 500,
            fig4_expiry_limit: Duration::from_secs(20),
            fig5_rounds: 1,
            fig5_readers: 8,
            fig5_round: Duration::from_millis(300),
            fig5_writer_pause: Duration::from_millis(10),
            fig6_sets: 1,
            fig6_rounds: 1,
            fig6_conns: 2,
            fig6_batch: 50,
            fig6_requests: 2_000,
            fig6_get_keys: 1_000,
            fig7_rounds: 1,
            fig7_conns: 4,
            fig7_phase: Duration::from_millis(60),
            fig7_clients: 16,
            fig7_fair_small: 8,
            fig7_limit: 8,
            fig7_round: Duration::from_millis(200),
            fig7_work: Duration::from_micros(100),
            fig8_rounds: 1,
            fig8_conns: 2,
            fig8_batch: 50,
            fig8_requests: 1_000,
        }
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).map(|v| !v.is_empty() && v != "0").unwrap_or(false)
}

fn find<'a>(figures: &'a [Figure], id: &str) -> Option<&'a Figure> {
    figures.iter().find(|f| f.id == id)
}

/// The goals, reported (never asserted).
fn goals(figures: &[Figure]) -> Vec<Goal> {
    let mut out = vec![];
    let fence = "fencelock";
    for (id, how) in [("1a", "not pipelined"), ("1b", "pipelined")] {
        if let Some(f) = find(figures, id) {
            let setnx = "SET NX PX";
            let a = f.value(fence, 0) / f.value(setnx, 0);
            out.push(Goal {
                goal: format!("acquire ≥ 0.95× native `SET NX PX` ({how})"),
                measured: format!("{} ({} vs {})", fmt_ratio(a), fmt_value(Unit::Rate, f.value(fence, 0)), fmt_value(Unit::Rate, f.value(setnx, 0))),
                met: a >= 0.95,
            });
            let r = f.value(fence, 1) / f.value(setnx, 1);
            out.push(Goal {
                goal: format!("release ≥ 1.3× `EVALSHA` compare-and-delete ({how})"),
                measured: format!("{} ({} vs {})", fmt_ratio(r), fmt_value(Unit::Rate, f.value(fence, 1)), fmt_value(Unit::Rate, f.value(setnx, 1))),
                met: r >= 1.3,
            });
        }
    }
    // Figure 2, one figure per client count: 2a, 2b, ... in the order of fig2_clients.
    let contention: Vec<(usize, &Figure)> =
        figures.iter().filter_map(|f| fig2::clients_of(f).map(|n| (n, f))).collect();
    if let Some((_, f)) = contention.iter().find(|(n, _)| *n == 64) {
        let poll = "SET NX PX, retry every 1 ms";
        let h = f.value(fence, 0) / f.value(poll, 0);
        out.push(Goal {
            goal: "contended handoffs/s ≥ 1.5× the 1 ms polling client (64 clients on one lock)".into(),
            measured: format!(
                "{} ({} vs {})",
                fmt_ratio(h),
                fmt_value(Unit::Rate, f.value(fence, 0)),
                fmt_value(Unit::Rate, f.value(poll, 0))
            ),
            met: h >= 1.5,
        });
    }
    if contention.len() >= 2 {
        // Server CPU per handoff (metric 4) of fencelock at each client count.
        let cpu: Vec<(usize, f64)> = contention.iter().map(|(n, f)| (*n, f.value(fence, 4))).collect();
        let hi = cpu.iter().map(|c| c.1).fold(f64::NAN, f64::max);
        let lo = cpu.iter().map(|c| c.1).fold(f64::NAN, f64::min);
        let spread = hi / lo;
        out.push(Goal {
            goal: format!(
                "server CPU per handoff flat (within ±20%: max/min ≤ 1.2) from {} to {} clients on one lock",
                cpu[0].0,
                cpu[cpu.len() - 1].0
            ),
            measured: format!(
                "max/min {} ({})",
                fmt_ratio(spread),
                cpu.iter().map(|(n, v)| format!("{n}: {}", fmt_value(Unit::Micros, *v))).collect::<Vec<_>>().join(", ")
            ),
            met: spread <= 1.2,
        });
        // Commands per handoff (metric 2), the worst client count.
        let cmds = contention.iter().map(|(_, f)| f.value(fence, 2)).fold(f64::NAN, f64::max);
        out.push(Goal {
            goal: "≤ 3 commands per contended handoff at every client count".into(),
            measured: format!("at most {}", fmt_value(Unit::Count, cmds)),
            met: cmds <= 3.0,
        });
    }
    if let Some(f) = find(figures, "3a") {
        let p99 = f.value(fence, 1);
        out.push(Goal {
            goal: "p99 release-to-grant < 1 ms on loopback".into(),
            measured: fmt_value(Unit::Micros, p99),
            met: p99 < 1000.0,
        });
    }
    if let Some(f) = find(figures, "4a") {
        let (a, b) = (f.value(fence, 0), f.value("SET key owner NX PX", 0));
        let m = a / b;
        out.push(Goal {
            goal: "memory per held lock ≤ 1.25× a `SET NX` lock".into(),
            measured: format!("{} ({} vs {})", fmt_ratio(m), fmt_value(Unit::Bytes, a), fmt_value(Unit::Bytes, b)),
            met: m <= 1.25,
        });
    }
    if let Some(f) = find(figures, "6") {
        // Paired per round (the servers alternate within a round), then the median.
        let paired = |r: usize, m: usize| -> f64 {
            let cells = |row: usize| f.rows[row].1[m].as_ref().map(|c| c.rounds.clone()).unwrap_or_default();
            let (base, this) = (cells(0), cells(r));
            util::median(&base.iter().zip(&this).map(|(a, b)| b / a).collect::<Vec<_>>())
        };
        for (r, case, limit) in [(2, "loaded and in use", 1.05), (1, "loaded but never used", 1.02)] {
            let x = paired(r, 0);
            out.push(Goal {
                goal: format!("`SET ... PX` server CPU with the module {case} ≤ {limit:.2}× without it"),
                measured: format!(
                    "{} ({} vs {} per request; median of per-round ratios)",
                    fmt_ratio(x),
                    fmt_value(Unit::Micros, f.value(fig6::CASES[r], 0)),
                    fmt_value(Unit::Micros, f.value(fig6::CASES[0], 0))
                ),
                met: x <= limit,
            });
        }
    }
    // Figure 8: the goals, on the paired per-round ratios (median), in every setup.
    let like: Vec<(fig8::Setup, &Figure)> =
        fig8::Setup::ALL.iter().filter_map(|s| find(figures, s.id()).map(|f| (*s, f))).collect();
    if !like.is_empty() {
        use fig8::Pair;
        // (goal, pair, metric: 2 = CPU ratio, 3 = rate ratio, limit, whether the ratio must stay at or below it)
        let rows: [(&str, Pair, usize, f64, bool); 5] = [
            ("fresh grant: `LOCK.ACQUIRE` server CPU per request ≤ a successful `SET NX PX`'s", Pair::Fresh, 2, 1.0, true),
            ("busy acquire: `LOCK.ACQUIRE` server CPU per request ≤ a failing `SET NX PX`'s", Pair::Busy, 2, 1.0, true),
            ("release: `LOCK.RELEASE` server CPU per request ≤ 0.5× the compare-and-delete `EVALSHA`'s", Pair::Release, 2, 0.5, true),
            ("pipelined release throughput ≥ 2× the compare-and-delete `EVALSHA`'s", Pair::Release, 3, 2.0, false),
            ("pipelined acquire (fresh grant) throughput ≥ 0.95× `SET NX PX`'s", Pair::Fresh, 3, 0.95, false),
        ];
        for (goal, pair, m, limit, at_most) in rows {
            let mut met = true;
            let mut parts = vec![];
            for (setup, f) in &like {
                let [fence, native] = pair.rows();
                let x = f.value(fence, m);
                met &= if at_most { x <= limit } else { x >= limit };
                let unit = if m == 2 { Unit::Micros } else { Unit::Rate };
                parts.push(format!(
                    "{} {} ({} vs {})",
                    setup.short(),
                    fmt_ratio(x),
                    fmt_value(unit, f.value(fence, m - 2)),
                    fmt_value(unit, f.value(native, m - 2))
                ));
            }
            out.push(Goal {
                goal: format!("{goal} (figure 8, every setup)"),
                measured: format!("{}; paired per round, median", parts.join(", ")),
                met,
            });
        }
    }
    out
}

fn main() {
    let quick = env_flag("BENCH_QUICK");
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let want = |n: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n));
    let cfg = if quick { Config::quick() } else { Config::full() };
    let t0 = Instant::now();
    let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let mut server = server::start();
    let mut con = server.conn();
    let redis_version = util::info(&mut con, "server").get("redis_version").cloned().unwrap_or_else(|| "unknown".into());
    let modules: String = {
        let v: redis::Value = util::exec(&mut con, &redis::cmd("MODULE").arg("LIST").clone());
        format!("{v:?}")
    };
    assert!(modules.contains("fencelock"), "the fencelock module is not loaded: MODULE LIST answered {modules}");
    let scripts = clients::Scripts::load(&mut con);
    eprintln!(
        "fencelock bench{}: {cores} cores, redis {redis_version}, server pid {} on port {}",
        if quick { " (quick)" } else { "" },
        server.pid(),
        server.port
    );

    let mut figures: Vec<Figure> = vec![];
    let mut timings = vec![];
    let mut section = |name: &str, t: Instant| {
        timings.push(format!("figure {name}: {:.1} s", t.elapsed().as_secs_f64()));
    };
    if want("1") {
        let t = Instant::now();
        figures.extend(fig1::run(&cfg, &mut server, &scripts));
        section("1", t);
    }
    if want("2") {
        let t = Instant::now();
        figures.extend(fig2::run(&cfg, &mut server, &scripts));
        section("2", t);
    }
    if want("3") {
        let t = Instant::now();
        figures.extend(fig3::run(&cfg, &mut server, &scripts));
        section("3", t);
    }
    if want("5") {
        let t = Instant::now();
        figures.extend(fig5::run(&cfg, &mut server, &scripts));
        section("5", t);
    }
    if want("7") {
        let t = Instant::now();
        figures.extend(fig7::run(&cfg, &mut server, &scripts));
        section("7", t);
    }
    server.assert_alive();
    server::stop(server);
    if want("4") {
        let t = Instant::now();
        figures.extend(fig4::run(&cfg));
        section("4", t);
    }
    if want("6") {
        let t = Instant::now();
        figures.extend(fig6::run(&cfg));
        section("6", t);
    }
    if want("8") {
        let t = Instant::now();
        figures.extend(fig8::run(&cfg));
        section("8", t);
    }
    figures.sort_by(|a, b| a.id.cmp(&b.id));

    let mut goals = goals(&figures);
    goals.extend(fig7::goals(&figures, &cfg));
    let report = Report {
        cores,
        redis_version,
        quick,
        started_unix,
        elapsed_s: t0.elapsed().as_secs_f64(),
        figures,
        goals,
        notes: vec![format!("time per figure: {}", timings.join(", "))],
    };
    let md = report.markdown();
    let json = report.json();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).expect("create target/bench");
    std::fs::write(dir.join("results.md"), &md).expect("write target/bench/results.md");
    std::fs::write(dir.join("results.json"), &json).expect("write target/bench/results.json");
    println!("{md}");
    eprintln!("wrote {} and {}", dir.join("results.md").display(), dir.join("results.json").display());
}
