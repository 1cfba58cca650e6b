//! Figure 5: read-write lock. 64 readers loop read-lock, tiny critical section,
//! read-unlock; one writer loops write-lock, tiny critical section, write-unlock and a
//! pause. Counts read and write grants; checks in the process that no reader ever holds
//! with the writer and that the writer holds alone.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::clients::{RwClient, RwKind, Scripts};
use crate::report::{metric, Cell, Figure, Unit};
use crate::server::Server;
use crate::util::{dbsize, server_cpu, sleep_until, uuid_like};
use crate::Config;

const TTL: u64 = 30_000;

#[derive(Clone, Copy, Debug, Default)]
struct Outcome {
    reads: u64,
    writes: u64,
    cmds: u64,
    cpu_s: f64,
    secs: f64,
}

fn tiny_work() {
    for i in 0..64 {
        std::hint::black_box(i);
    }
}

fn round(cfg: &Config, server: &Server, kind: RwKind, scripts: &Scripts, key: &str) -> Outcome {
    let readers_in = Arc::new(AtomicI64::new(0));
    let writer_in = Arc::new(AtomicBool::new(false));
    let n = cfg.fig5_readers + 1;
    let connected = Arc::new(crate::util::Gate::new(n + 1));
    let go = Arc::new(crate::util::Gate::new(n + 1));
    let stop_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let pause = cfg.fig5_writer_pause;
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (readers_in, writer_in) = (readers_in.clone(), writer_in.clone());
            let (connected, go, stop_at) = (connected.clone(), go.clone(), stop_at.clone());
            let (url, scripts, key) = (server.url(), scripts.clone(), key.to_string());
            let writer = i == 0;
            std::thread::spawn(move || -> (u64, u64) {
                let mut client = RwClient::new(kind, &url, format!("{}:{i}", uuid_like()), TTL, &scripts);
                connected.wait();
                go.wait();
                let stop = stop_at.lock().unwrap().expect("stop time set");
                client.count_until = stop;
                let mut grants = 0;
                while Instant::now() < stop {
                    let Some(g) = client.lock(&key, writer, stop) else { break };
                    if writer {
                        if writer_in.swap(true, SeqCst) {
                            panic!("WRONG RESULT: {}: two writers hold the lock", kind.name());
                        }
                        let r = readers_in.load(SeqCst);
                        if r != 0 {
                            panic!("WRONG RESULT: {}: the writer was granted while {r} readers hold the lock", kind.name());
                        }
                    } else {
                        readers_in.fetch_add(1, SeqCst);
                        if writer_in.load(SeqCst) {
                            panic!("WRONG RESULT: {}: a reader was granted while the writer holds the lock", kind.name());
                        }
                    }
                    if g.at < stop {
                        grants += 1;
                    }
                    tiny_work();
                    if writer {
                        writer_in.store(false, SeqCst);
                    } else {
                        readers_in.fetch_sub(1, SeqCst);
                    }
                    client.unlock(&key, writer);
                    if writer {
                        let now = Instant::now();
                        if now < stop {
                            std::thread::sleep(pause.min(stop - now));
                        }
                    }
                }
                (grants, client.cmds)
            })
        })
        .collect();
    let mut con = server.conn();
    connected.wait();
    let cpu0 = server_cpu(&mut con);
    let start = Instant::now();
    let stop = start + cfg.fig5_round;
    *stop_at.lock().unwrap() = Some(stop);
    go.wait();
    sleep_until(stop);
    let cpu1 = server_cpu(&mut con);
    let secs = start.elapsed().as_secs_f64();
    let mut o = Outcome { cpu_s: cpu1 - cpu0, secs, ..Default::default() };
    for (i, h) in handles.into_iter().enumerate() {
        let (grants, cmds) = h.join().expect("a figure-5 client failed");
        if i == 0 {
            o.writes += grants;
        } else {
            o.reads += grants;
        }
        o.cmds += cmds;
    }
    let left = dbsize(&mut con);
    assert_eq!(left, 0, "WRONG RESULT: {}: the lock's key is still there after every client released it", kind.name());
    assert!(o.reads > 0, "WRONG RESULT: {}: no read grant in a round", kind.name());
    o
}

pub fn run(cfg: &Config, server: &mut Server, scripts: &Scripts) -> Vec<Figure> {
    let mut results: Vec<Vec<Outcome>> = vec![vec![]; RwKind::ALL.len()];
    for r in 0..cfg.fig5_rounds {
        for k in 0..RwKind::ALL.len() {
            let ci = (k + r) % RwKind::ALL.len();
            let kind = RwKind::ALL[ci];
            let o = round(cfg, server, kind, scripts, &format!("f5:{r}:{ci}"));
            server.assert_alive();
            eprintln!(
                "  fig 5 round {}/{}: {:<55} reads {:>7.0}/s writes {:>5.0}/s cmds/grant {:>5.2} cpu/grant {:>6.1} µs",
                r + 1,
                cfg.fig5_rounds,
                kind.name(),
                o.reads as f64 / o.secs,
                o.writes as f64 / o.secs,
                o.cmds as f64 / (o.reads + o.writes).max(1) as f64,
                o.cpu_s * 1e6 / (o.reads + o.writes).max(1) as f64
            );
            results[ci].push(o);
        }
    }
    let mut f = Figure::new(
        "5",
        &format!("Read-write lock: {} readers and 1 writer on one lock", cfg.fig5_readers),
        vec![
            metric("read grants/s", Unit::Rate, true),
            metric("write grants/s", Unit::Rate, true),
            metric("commands sent per grant", Unit::Count, false),
            metric("server CPU per grant", Unit::Micros, false),
        ],
    );
    for (ci, kind) in RwKind::ALL.iter().enumerate() {
        let os = &results[ci];
        let grants = |o: &Outcome| (o.reads + o.writes).max(1) as f64;
        f.row(
            kind.name(),
            vec![
                Some(Cell::median_of(os.iter().map(|o| o.reads as f64 / o.secs).collect())),
                Some(Cell::median_of(os.iter().map(|o| o.writes as f64 / o.secs).collect())),
                Some(Cell::median_of(os.iter().map(|o| o.cmds as f64 / grants(o)).collect())),
                Some(Cell::median_of(os.iter().map(|o| o.cpu_s * 1e6 / grants(o)).collect())),
            ],
        );
    }
    f.notes.push(format!(
        "Median of {} rounds of {} ms. Readers loop without pause; the writer pauses {} ms after each write. fencelock \
         waits server-side (a waiting writer holds back later readers); the Lua lock's readers and writer retry every \
         1 ms when refused. Commands per grant count every attempt, grant and release.",
        cfg.fig5_rounds,
        cfg.fig5_round.as_millis(),
        cfg.fig5_writer_pause.as_millis()
    ));
    vec![f]
}
