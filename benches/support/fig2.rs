//! Figure 2: contention. N clients on one lock (4, 16, 64 and 256 in the full run), each
//! looping acquire, a tiny critical section, release, for a fixed time. Counts handoffs
//! (a grant to another client than the previous holder), grants, every command each
//! client sends (failed retries, SUBSCRIBE/UNSUBSCRIBE included), pub/sub messages
//! received, the server's CPU, each acquire's wait (from the start of the client's
//! attempt to its grant) and how many distinct clients got the lock at all.
//!
//! Mutual exclusion is checked in the process: a grant while another client holds the
//! lock stops the benchmark, and so do fencelock tokens that do not increase.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clients::{Scripts, WaitClient, Waiting};
use crate::report::{info_metric, metric, Cell, Figure, Unit};
use crate::server::Server;
use crate::util::{dbsize, max, micros, percentile, server_cpu, sleep_until, uuid_like};
use crate::Config;

const TTL: u64 = 30_000;

#[derive(Clone, Copy, Debug, Default)]
struct Outcome {
    grants: u64,
    handoffs: u64,
    cmds: u64,
    msgs: u64,
    cpu_s: f64,
    secs: f64,
    served: usize,
    /// p99 of the waits of this round, µs.
    p99_wait_us: f64,
    max_wait_us: f64,
    waits: usize,
}

struct ThreadOutcome {
    grants: u64,
    handoffs: u64,
    cmds: u64,
    msgs: u64,
    tokens: Vec<(u64, i64)>,
    /// µs from the start of each acquire attempt to its grant; an attempt still waiting
    /// when the round ends counts with its wait so far (a lower bound).
    waits: Vec<f64>,
}

/// The client count of a figure-2 figure (its title says it).
pub fn clients_of(f: &Figure) -> Option<usize> {
    if !f.id.starts_with('2') {
        return None;
    }
    f.title.strip_prefix("Contention: ")?.split_whitespace().next()?.parse().ok()
}

/// A critical section that does (almost) nothing.
fn tiny_work() {
    for i in 0..64 {
        std::hint::black_box(i);
    }
}

fn round(server: &Server, kind: Waiting, clients: usize, dur: Duration, scripts: &Scripts, key: &str) -> Outcome {
    let holder = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(AtomicUsize::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(crate::util::Gate::new(clients + 1));
    let go = Arc::new(crate::util::Gate::new(clients + 1));
    let stop_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let handles: Vec<_> = (0..clients)
        .map(|i| {
            let (holder, last, seq) = (holder.clone(), last.clone(), seq.clone());
            let (connected, go, stop_at) = (connected.clone(), go.clone(), stop_at.clone());
            let (url, port, scripts, key) = (server.url(), server.port, scripts.clone(), key.to_string());
            std::thread::spawn(move || -> ThreadOutcome {
                let me = i + 1;
                let mut client = WaitClient::new(kind, &url, port, format!("{}:{me}", uuid_like()), TTL, &scripts);
                connected.wait();
                go.wait();
                let stop = stop_at.lock().unwrap().expect("stop time set");
                client.count_until = stop;
                let mut out = ThreadOutcome { grants: 0, handoffs: 0, cmds: 0, msgs: 0, tokens: vec![], waits: vec![] };
                while Instant::now() < stop {
                    let asked = Instant::now();
                    let got = client.acquire(&key, stop);
                    let granted = got.as_ref().map_or(stop, |g| g.at.min(stop));
                    out.waits.push(micros(granted.saturating_duration_since(asked)));
                    let Some(g) = got else { break };
                    let other = holder.swap(me, SeqCst);
                    if other != 0 {
                        panic!("WRONG RESULT: {}: lock granted to client {me} while client {other} holds it", kind.name());
                    }
                    let n = seq.fetch_add(1, SeqCst);
                    let prev = last.swap(me, SeqCst);
                    if g.at < stop {
                        out.grants += 1;
                        if prev != me {
                            out.handoffs += 1;
                        }
                    }
                    if let Some(t) = g.token {
                        out.tokens.push((n, t));
                    }
                    tiny_work();
                    if holder.swap(0, SeqCst) != me {
                        panic!("WRONG RESULT: {}: another client took the lock from client {me}", kind.name());
                    }
                    client.release(&key);
                }
                out.cmds = client.cmds;
                out.msgs = client.msgs;
                out
            })
        })
        .collect();
    let mut con = server.conn();
    connected.wait();
    let cpu0 = server_cpu(&mut con);
    let start = Instant::now();
    let stop = start + dur;
    *stop_at.lock().unwrap() = Some(stop);
    go.wait();
    sleep_until(stop);
    let cpu1 = server_cpu(&mut con);
    let secs = start.elapsed().as_secs_f64();
    let outs: Vec<ThreadOutcome> = handles.into_iter().map(|h| h.join().expect("a figure-2 client failed")).collect();

    // fencelock: tokens strictly increase in grant order.
    let mut tokens: Vec<(u64, i64)> = outs.iter().flat_map(|o| o.tokens.iter().cloned()).collect();
    tokens.sort();
    for w in tokens.windows(2) {
        if w[1].1 <= w[0].1 {
            panic!("WRONG RESULT: {}: grant #{} got token {} after grant #{} got {}", kind.name(), w[1].0, w[1].1, w[0].0, w[0].1);
        }
    }
    let left = dbsize(&mut con);
    assert_eq!(left, 0, "WRONG RESULT: {}: the lock's key is still there after every client released it", kind.name());

    let waits: Vec<f64> = outs.iter().flat_map(|o| o.waits.iter().cloned()).collect();
    let mut o = Outcome { cpu_s: cpu1 - cpu0, secs, p99_wait_us: percentile(&waits, 99.0), max_wait_us: max(&waits), waits: waits.len(), ..Default::default() };
    for t in &outs {
        o.grants += t.grants;
        o.handoffs += t.handoffs;
        o.cmds += t.cmds;
        o.msgs += t.msgs;
        o.served += (t.grants > 0) as usize;
    }
    assert!(o.waits > 0 && o.p99_wait_us.is_finite(), "{}: no acquire was timed", kind.name());
    assert!(o.grants > 0, "WRONG RESULT: {}: no client got the lock in a {dur:?} round", kind.name());
    o
}

pub fn run(cfg: &Config, server: &mut Server, scripts: &Scripts) -> Vec<Figure> {
    let sizes = &cfg.fig2_clients;
    let mut results: Vec<Vec<Vec<Outcome>>> = vec![vec![vec![]; Waiting::ALL.len()]; sizes.len()];
    for r in 0..cfg.fig2_rounds {
        for (si, &n) in sizes.iter().enumerate() {
            for k in 0..Waiting::ALL.len() {
                let ci = (k + r) % Waiting::ALL.len();
                let kind = Waiting::ALL[ci];
                let o = round(server, kind, n, cfg.fig2_round, scripts, &format!("f2:{r}:{si}:{ci}"));
                server.assert_alive();
                eprintln!(
                    "  fig 2 round {}/{} {n:>3} clients: {:<52} handoffs {:>7.0}/s grants {:>7.0}/s cmds/handoff {:>8.2} cpu/handoff {:>8.1} µs p99 wait {:>9.0} µs served {}",
                    r + 1,
                    cfg.fig2_rounds,
                    kind.name(),
                    o.handoffs as f64 / o.secs,
                    o.grants as f64 / o.secs,
                    o.cmds as f64 / o.handoffs.max(1) as f64,
                    o.cpu_s * 1e6 / o.handoffs.max(1) as f64,
                    o.p99_wait_us,
                    o.served
                );
                results[si][ci].push(o);
            }
        }
    }
    sizes
        .iter()
        .enumerate()
        .map(|(si, &n)| {
            let id = format!("2{}", (b'a' + si as u8) as char);
            let mut f = Figure::new(
                &id,
                &format!("Contention: {n} clients looping acquire, tiny critical section, release on one lock"),
                vec![
                    metric("handoffs/s", Unit::Rate, true),
                    metric("grants/s", Unit::Rate, true),
                    metric("commands sent per handoff", Unit::Count, false),
                    metric("commands sent per grant", Unit::Count, false),
                    metric("server CPU per handoff", Unit::Micros, false),
                    metric("p99 wait", Unit::Micros, false),
                    metric("longest wait", Unit::Micros, false),
                    info_metric("pub/sub messages per handoff", Unit::Count),
                    info_metric("clients served", Unit::Count),
                ],
            );
            for (ci, kind) in Waiting::ALL.iter().enumerate() {
                let os = &results[si][ci];
                let per_handoff = |x: fn(&Outcome) -> f64| Cell::median_of(os.iter().map(|o| x(o) / o.handoffs.max(1) as f64).collect());
                f.row(
                    kind.name(),
                    vec![
                        Some(Cell::median_of(os.iter().map(|o| o.handoffs as f64 / o.secs).collect())),
                        Some(Cell::median_of(os.iter().map(|o| o.grants as f64 / o.secs).collect())),
                        Some(per_handoff(|o| o.cmds as f64)),
                        Some(Cell::median_of(os.iter().map(|o| o.cmds as f64 / o.grants.max(1) as f64).collect())),
                        Some(per_handoff(|o| o.cpu_s * 1e6)),
                        Some(Cell::median_of(os.iter().map(|o| o.p99_wait_us).collect())),
                        Some(Cell::median_of(os.iter().map(|o| o.max_wait_us).collect())),
                        Some(per_handoff(|o| o.msgs as f64)),
                        Some(Cell::median_of(os.iter().map(|o| o.served as f64).collect())),
                    ],
                );
            }
            f.notes.push(format!(
                "Median of {} rounds of {} ms. A handoff is a grant to a different client than the previous holder; a grant \
                 is any acquire that succeeded (a client that takes the lock again right after releasing it makes a grant, \
                 not a handoff). Commands are counted in the client (every acquire attempt, release, SUBSCRIBE and \
                 UNSUBSCRIBE); server CPU is the `used_cpu_user + used_cpu_sys` delta of `INFO cpu` over the round. \
                 Wait: from the moment a client starts an acquire (its first try) to the reply that grants it, retries and \
                 pub/sub waits included; an acquire still waiting when the round ends counts with its wait so far (a lower \
                 bound, so a contender that starves some clients cannot hide them); p99 and longest over every acquire of a \
                 round, median over rounds. The p99 weighs acquires, not clients: a client that takes the lock again and \
                 again while others starve makes many short waits, so read it beside the longest wait and clients served. \
                 Clients served: how many of the {n} clients got the lock at least once in a round.",
                cfg.fig2_rounds,
                cfg.fig2_round.as_millis()
            ));
            f
        })
        .collect()
}
