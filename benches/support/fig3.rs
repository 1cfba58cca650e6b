//! Figure 3: latency of a handoff to a waiting client.
//!
//! A few holder/waiter pairs run side by side, each on its own lock. A sample: the
//! holder takes a fresh lock; its waiter starts waiting (the contender's way); once the
//! waiter provably waits (fencelock: `LOCK.INFO` shows it queued; the others: their
//! first attempt was refused) the holder either
//! - releases after a random hold: latency = waiter's grant - release sent, or
//! - never releases, its lease being short: latency = waiter's grant - lease deadline
//!   (the deadline estimated as the middle of the acquire's round trip + ttl).
//!
//! A waiter granted before the release was sent (or before the lease could have ended)
//! is a wrong result and stops the benchmark.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::Value;

use crate::clients::{await_signal, fail_signal, FailSignal, Scripts, WaitClient, Waiting};
use crate::report::{Cell, Figure, Unit, metric, info_metric};
use crate::server::Server;
use crate::util::{dbsize, exec, max, micros, percentile, uuid_like};
use crate::Config;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Release,
    Deadline,
}

struct Job {
    key: String,
    sig: FailSignal,
}

struct Granted {
    at: Instant,
    token: Option<i64>,
}

/// `waiters` of `LOCK.INFO key` (0 when the lock is free with no waiters).
fn fence_waiters(con: &mut redis::Connection, key: &str) -> i64 {
    let mut c = redis::cmd("LOCK.INFO");
    c.arg(key);
    match exec(con, &c) {
        Value::Nil => 0,
        Value::Array(items) => {
            for kv in items.chunks(2) {
                if let [Value::BulkString(k), v] = kv {
                    if k == b"waiters" {
                        if let Value::Int(n) = v {
                            return *n;
                        }
                    }
                }
            }
            panic!("LOCK.INFO {key} has no integer waiters field: {items:?}")
        }
        other => panic!("LOCK.INFO {key} answered {other:?}"),
    }
}

/// Hold time (release case) and lease (deadline case) ranges in ms: long enough that the
/// waiter is well into its waiting, which for the 50-250 ms retry takes several cycles.
fn ranges(kind: Waiting) -> ((u64, u64), (u64, u64)) {
    match kind {
        Waiting::Redlock => ((1, 500), (50, 500)),
        _ => ((1, 10), (20, 40)),
    }
}

/// Runs one pair until `end` (at least one sample); returns (latencies in µs, discarded).
fn pair(url: &str, port: u16, kind: Waiting, lat: Kind, end: Instant, scripts: &Scripts, tag: &str) -> (Vec<f64>, usize) {
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let (res_tx, res_rx) = mpsc::channel::<Granted>();
    let waiter = {
        let (url, scripts) = (url.to_string(), scripts.clone());
        std::thread::spawn(move || {
            let mut client = WaitClient::new(kind, &url, port, format!("{}:waiter", uuid_like()), 30_000, &scripts);
            while let Ok(job) = job_rx.recv() {
                client.on_fail = Some(job.sig);
                let g = client
                    .acquire(&job.key, Instant::now() + Duration::from_secs(30))
                    .unwrap_or_else(|| panic!("WRONG RESULT: {}: the waiter on {} was never granted", kind.name(), job.key));
                client.on_fail = None;
                client.release(&job.key);
                if res_tx.send(Granted { at: g.at, token: g.token }).is_err() {
                    break;
                }
            }
        })
    };
    let mut holder = WaitClient::new(kind, url, port, format!("{}:holder", uuid_like()), 30_000, scripts);
    let mut rng = StdRng::from_entropy();
    let (hold_ms, ttl_ms) = ranges(kind);
    let mut samples = vec![];
    let mut discarded = 0;
    let mut seq = 0;
    while samples.len() + discarded == 0 || Instant::now() < end {
        seq += 1;
        let key = format!("{tag}:{seq}");
        let ttl = if lat == Kind::Deadline { rng.gen_range(ttl_ms.0..=ttl_ms.1) } else { 30_000 };
        holder.set_ttl(ttl);
        let sent = Instant::now();
        let g = holder
            .acquire(&key, sent + Duration::from_secs(5))
            .unwrap_or_else(|| panic!("WRONG RESULT: {}: a fresh lock {key} was refused", kind.name()));
        let deadline = sent + (g.at - sent) / 2 + Duration::from_millis(ttl);
        let earliest_end = sent + Duration::from_millis(ttl);
        let sig = fail_signal();
        job_tx.send(Job { key: key.clone(), sig: sig.clone() }).unwrap();
        let limit = match lat {
            Kind::Release => Instant::now() + Duration::from_secs(10),
            Kind::Deadline => deadline,
        };
        let waiting_at = if kind == Waiting::Fence {
            loop {
                if fence_waiters(holder.con(), &key) >= 1 {
                    break Some(Instant::now());
                }
                if Instant::now() >= limit {
                    break None;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        } else {
            await_signal(&sig, limit)
        };
        match lat {
            Kind::Release => {
                if waiting_at.is_none() {
                    panic!("{}: the waiter on {key} did not start waiting within 10 s", kind.name());
                }
                std::thread::sleep(Duration::from_millis(rng.gen_range(hold_ms.0..=hold_ms.1)));
                let released = Instant::now();
                holder.release(&key);
                let w = res_rx.recv().expect("the waiter thread died");
                if w.at < released {
                    panic!("WRONG RESULT: {}: the waiter was granted {key} before the holder released it", kind.name());
                }
                if let (Some(th), Some(tw)) = (g.token, w.token) {
                    assert!(tw > th, "WRONG RESULT: {}: token {tw} after {th} on {key}", kind.name());
                }
                samples.push(micros(w.at - released));
            }
            Kind::Deadline => {
                let w = res_rx.recv().expect("the waiter thread died");
                if w.at + Duration::from_millis(2) < earliest_end {
                    panic!(
                        "WRONG RESULT: {}: the waiter was granted {key} {:?} before its {ttl} ms lease could end",
                        kind.name(),
                        earliest_end - w.at
                    );
                }
                if let (Some(th), Some(tw)) = (g.token, w.token) {
                    assert!(tw > th, "WRONG RESULT: {}: token {tw} after {th} on {key}", kind.name());
                }
                match waiting_at {
                    Some(t) if t < deadline => {
                        let l = if w.at >= deadline { micros(w.at - deadline) } else { -micros(deadline - w.at) };
                        samples.push(l);
                    }
                    _ => discarded += 1,
                }
            }
        }
    }
    drop(job_tx);
    waiter.join().expect("a figure-3 waiter failed");
    (samples, discarded)
}

fn round(cfg: &Config, server: &Server, kind: Waiting, lat: Kind, scripts: &Scripts, tag: &str) -> (Vec<f64>, usize) {
    let end = Instant::now() + cfg.fig3_budget;
    let handles: Vec<_> = (0..cfg.fig3_pairs)
        .map(|p| {
            let (url, port, scripts, tag) = (server.url(), server.port, scripts.clone(), format!("{tag}:{p}"));
            std::thread::spawn(move || pair(&url, port, kind, lat, end, &scripts, &tag))
        })
        .collect();
    let mut all = vec![];
    let mut discarded = 0;
    for h in handles {
        let (s, d) = h.join().expect("a figure-3 pair failed");
        all.extend(s);
        discarded += d;
    }
    (all, discarded)
}

pub fn run(cfg: &Config, server: &mut Server, scripts: &Scripts) -> Vec<Figure> {
    let kinds = [Kind::Release, Kind::Deadline];
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![vec![]; Waiting::ALL.len()]; kinds.len()];
    let mut discarded = vec![vec![0usize; Waiting::ALL.len()]; kinds.len()];
    let mut con = server.conn();
    for r in 0..cfg.fig3_rounds {
        for (li, &lat) in kinds.iter().enumerate() {
            for k in 0..Waiting::ALL.len() {
                let ci = (k + r) % Waiting::ALL.len();
                let kind = Waiting::ALL[ci];
                let (s, d) = round(cfg, server, kind, lat, scripts, &format!("f3:{r}:{li}:{ci}"));
                server.assert_alive();
                let left = dbsize(&mut con);
                assert_eq!(left, 0, "WRONG RESULT: {}: {left} lock keys left after every waiter released", kind.name());
                eprintln!(
                    "  fig 3 round {}/{} {:?}: {:<52} n {:>4} p50 {:>9.0} µs p99 {:>9.0} µs max {:>9.0} µs discarded {d}",
                    r + 1,
                    cfg.fig3_rounds,
                    lat,
                    kind.name(),
                    s.len(),
                    percentile(&s, 50.0),
                    percentile(&s, 99.0),
                    max(&s)
                );
                samples[li][ci].extend(s);
                discarded[li][ci] += d;
            }
        }
    }
    kinds
        .iter()
        .enumerate()
        .map(|(li, lat)| {
            let (id, title) = match lat {
                Kind::Release => ("3a", "Latency from release to the next waiter's grant"),
                Kind::Deadline => ("3b", "Latency from lease deadline to the waiter's grant (holder never releases)"),
            };
            let mut f = Figure::new(
                id,
                title,
                vec![
                    metric("p50", Unit::Micros, false),
                    metric("p99", Unit::Micros, false),
                    metric("max", Unit::Micros, false),
                    info_metric("samples", Unit::Count),
                ],
            );
            for (ci, kind) in Waiting::ALL.iter().enumerate() {
                let s = &samples[li][ci];
                f.row(
                    kind.name(),
                    vec![
                        Some(Cell::pooled(percentile(s, 50.0), s.len())),
                        Some(Cell::pooled(percentile(s, 99.0), s.len())),
                        Some(Cell::pooled(max(s), s.len())),
                        Some(Cell::pooled(s.len() as f64, s.len())),
                    ],
                );
            }
            let (h0, h1) = ranges(Waiting::Fence).0;
            f.notes.push(format!(
                "Percentiles over every sample of {} rounds ({} holder/waiter pairs side by side, each on its own lock, {} ms per \
                 round and contender). {}",
                cfg.fig3_rounds,
                cfg.fig3_pairs,
                cfg.fig3_budget.as_millis(),
                match lat {
                    Kind::Release => format!(
                        "The holder releases {h0}-{h1} ms after the waiter provably waits ({}-{} ms for the 50-250 ms retry, so \
                         the release lands anywhere in its retry cycle).",
                        ranges(Waiting::Redlock).0 .0,
                        ranges(Waiting::Redlock).0 .1
                    ),
                    Kind::Deadline => format!(
                        "Leases of {}-{} ms ({}-{} ms for the 50-250 ms retry); the deadline is the middle of the acquire's round \
                         trip + ttl, so values can be slightly negative. Discarded samples (the waiter was not yet waiting at the \
                         deadline): {}.",
                        ranges(Waiting::Fence).1 .0,
                        ranges(Waiting::Fence).1 .1,
                        ranges(Waiting::Redlock).1 .0,
                        ranges(Waiting::Redlock).1 .1,
                        Waiting::ALL
                            .iter()
                            .enumerate()
                            .map(|(ci, k)| format!("{} {}", k.name(), discarded[li][ci]))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            ));
            f
        })
        .collect()
}
