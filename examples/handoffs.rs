//! A contention driver for profiling the server (scripts/handoffs-callgrind.sh): CLIENTS
//! threads loop `LOCK.ACQUIRE key me ttl WAIT 0` then `LOCK.RELEASE` on one lock until
//! HANDOFFS grants were made in all, then exit.
//!
//! `cargo run --release --example handoffs -- PORT CLIENTS HANDOFFS`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect("PORT CLIENTS HANDOFFS")).collect();
    let [port, clients, handoffs] = args[..] else { panic!("usage: handoffs PORT CLIENTS HANDOFFS") };
    let granted = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let granted = Arc::clone(&granted);
            std::thread::spawn(move || {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("url");
                let mut con = client.get_connection().expect("connect");
                let me = format!("client-{i}");
                while granted.load(Ordering::Relaxed) < handoffs {
                    let token: Option<i64> =
                        redis::cmd("LOCK.ACQUIRE").arg("contended").arg(&me).arg(30_000).arg("WAIT").arg(0).query(&mut con).expect("acquire");
                    assert!(token.is_some(), "WAIT 0 answered nil");
                    let n = granted.fetch_add(1, Ordering::Relaxed) + 1;
                    let released: i64 = redis::cmd("LOCK.RELEASE").arg("contended").arg(&me).query(&mut con).expect("release");
                    assert_eq!(released, 1);
                    if n >= handoffs {
                        // Wake the others: each still waiting is granted in turn and stops.
                        break;
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    println!("{}", granted.load(Ordering::Relaxed));
}
