//! Fault suite, bad input (4 of 4): a valid DUMP restored behaves like the original.
//!
//! `restored_dump_behaves_like_the_original`: a valid DUMP restored under another name
//! (and on another server) reports the same state, digests the same, is released and
//! reentered like the original, and its lease still ends at the original deadline,
//! handing the lock to a waiter. (Its corrupt siblings: `chaos_corrupt_dump`.)

#[path = "support/input/mod.rs"]
mod input;
mod support;

use std::time::{Duration, Instant};

use input::corrupt::genuine_dumps;
use input::generator::{open_conn, Timing};
use input::rdb::{tokens_of, Field};
use support::*;

fn must(conn: &mut Raw, args: &[&str]) -> Reply {
    conn.call(args, Duration::from_secs(20)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// INFO without the ttl fields (they count down), and the ttls apart.
fn info_parts(r: &Reply) -> (Reply, Vec<i64>) {
    fn strip(r: &Reply, ttls: &mut Vec<i64>) -> Reply {
        match r {
            Reply::Array(items) if items.len() % 2 == 0 && items.chunks(2).all(|kv| kv[0].bytes().is_some()) => {
                let mut out = Vec::new();
                for kv in items.chunks(2) {
                    if kv[0].bytes().as_deref() == Some(b"ttl") {
                        ttls.push(kv[1].int().unwrap_or(-1));
                    } else {
                        out.push(kv[0].clone());
                        out.push(strip(&kv[1], ttls));
                    }
                }
                Reply::Array(out)
            }
            Reply::Array(items) => Reply::Array(items.iter().map(|i| strip(i, ttls)).collect()),
            other => other.clone(),
        }
    }
    let mut ttls = Vec::new();
    let stripped = strip(r, &mut ttls);
    (stripped, ttls)
}

fn assert_same_state(conn: &mut Raw, info_cmd: &str, original: &str, restored: &str) {
    let before = Instant::now();
    let a = must(conn, &[info_cmd, original]);
    let b = must(conn, &[info_cmd, restored]);
    let apart = before.elapsed().as_millis() as i64 + 2;
    assert_ne!(a, Reply::Nil, "{info_cmd} {original} is nil");
    let (sa, ta) = info_parts(&a);
    let (sb, tb) = info_parts(&b);
    assert_eq!(sa, sb, "{info_cmd}: restored {} differs from original {}", b.brief(), a.brief());
    assert_eq!(ta.len(), tb.len());
    for (x, y) in ta.iter().zip(&tb) {
        assert!(
            *y <= *x && *x - *y <= apart,
            "{info_cmd}: restored ttl {y} vs original {x} (read {apart} ms apart): the deadline moved"
        );
    }
    let da = must(conn, &["DEBUG", "DIGEST-VALUE", original]);
    let db = must(conn, &["DEBUG", "DIGEST-VALUE", restored]);
    assert_eq!(da, db, "DEBUG DIGEST-VALUE of {restored} differs from {original}");
}

#[test]
fn restored_dump_behaves_like_the_original() {
    let server = Server::start(&[]);
    let other = Server::start(&["sanitize-dump-payload yes"]);
    let t = Timing::native();
    let mut c = open_conn(server.port, t.hang).unwrap();
    let mut o = open_conn(other.port, t.hang).unwrap();
    let (m, rw, readers, f) = genuine_dumps(&mut c, t, 600_000);
    for (d, src, info) in
        [(&m, "src:mutex", "LOCK.INFO"), (&rw, "src:rw", "RWLOCK.INFO"), (&readers, "src:readers", "RWLOCK.INFO")]
    {
        let dst = format!("{src}:copy");
        let r = c.call(&[b"RESTORE".as_slice(), dst.as_bytes(), b"0", &d.raw], t.hang).unwrap();
        assert_eq!(r, Reply::Simple("OK".into()), "RESTORE {dst} of the genuine DUMP of {src}");
        assert_same_state(&mut c, info, src, &dst);
        // The same payload on another server (sanitize-dump-payload yes).
        let r = o.call(&[b"RESTORE".as_slice(), src.as_bytes(), b"0", &d.raw], t.hang).unwrap();
        assert_eq!(r, Reply::Simple("OK".into()), "RESTORE {src} on the other server");
        let (a, _) = info_parts(&must(&mut c, &[info, src]));
        let (b, _) = info_parts(&must(&mut o, &[info, src]));
        assert_eq!(a, b, "{info} {src} on the other server differs");
    }
    let r = c.call(&[b"RESTORE".as_slice(), b"src:fence:copy", b"0", &f.raw], t.hang).unwrap();
    assert_eq!(r, Reply::Simple("OK".into()));
    assert_eq!(must(&mut c, &["FENCE.CURRENT", "src:fence"]), must(&mut c, &["FENCE.CURRENT", "src:fence:copy"]));
    let cur = (&must(&mut c, &["FENCE.CURRENT", "src:fence:copy"])).int().unwrap();
    assert!(matches!(must(&mut c, &["FENCE.NEXT", "src:fence:copy"]), Reply::Int(t) if t > cur));
    assert_eq!(
        must(&mut c, &["FENCE.CHECK", "src:fence:copy", &(cur - 1).to_string()]).errors().len(),
        1,
        "an older token must be STALE on the restored fence"
    );

    // The restored mutex works like the original: others are refused, the holder reenters
    // with its token, and three releases free it (two holds restored, one taken).
    let token = (&(&must(&mut c, &["LOCK.INFO", "src:mutex:copy"])).fields().unwrap()["token"]).int().unwrap();
    assert_eq!(must(&mut c, &["LOCK.ACQUIRE", "src:mutex:copy", "bob", "1000"]), Reply::Nil);
    assert_eq!(must(&mut c, &["LOCK.ACQUIRE", "src:mutex:copy", "alice", "600000"]), Reply::Int(token));
    for _ in 0..3 {
        assert_eq!(must(&mut c, &["LOCK.RELEASE", "src:mutex:copy", "alice"]), Reply::Int(1));
    }
    assert_eq!(must(&mut c, &["LOCK.INFO", "src:mutex:copy"]), Reply::Nil);
    assert_eq!(must(&mut c, &["EXISTS", "src:mutex:copy"]), Reply::Int(0), "a released restored lock leaves no key");
    // The restored rwlock: the writer's holds are there, another writer waits.
    assert_eq!(must(&mut c, &["RWLOCK.WLOCK", "src:rw:copy", "other", "1000"]), Reply::Nil);
    assert_eq!(must(&mut c, &["RWLOCK.RUNLOCK", "src:rw:copy", "writer"]), Reply::Int(1));
    assert_eq!(must(&mut c, &["RWLOCK.RUNLOCK", "src:rw:copy", "writer"]), Reply::Int(1));
    assert_eq!(must(&mut c, &["RWLOCK.WUNLOCK", "src:rw:copy", "writer"]), Reply::Int(1));
    assert_eq!(must(&mut c, &["RWLOCK.INFO", "src:rw:copy"]), Reply::Nil);

    // A restored token from the future (a clock ahead, still below 2^53) raises the
    // server's token floor: the next token on any key is above it.
    let ahead = token_wall_part(now_ms() + 3_600_000);
    let mut fields = m.fields.clone();
    fields[1] = Field::U(ahead as u64);
    let payload = m.build(7, m.module_id, &fields, true);
    let r = o.call(&[b"RESTORE".as_slice(), b"ahead", b"0", &payload], t.hang).unwrap();
    assert_eq!(r, Reply::Simple("OK".into()), "RESTORE of a mutex with a token one hour ahead");
    let next = (&must(&mut o, &["FENCE.NEXT", "unrelated"])).int().unwrap();
    assert!(
        next > ahead,
        "FENCE.NEXT gave {next} after restoring token {ahead}: RESTORE did not raise the token floor"
    );

    // Leases of restored keys still end at the original deadline, and hand the lock on.
    let lease = 1500;
    let t0 = now_ms();
    let (sm, srw, _, _) = {
        for k in ["src:mutex", "src:rw", "src:readers", "src:fence"] {
            must(&mut c, &["DEL", k]);
        }
        genuine_dumps(&mut c, t, lease)
    };
    let t1 = now_ms();
    for k in ["src:mutex", "src:rw", "src:readers", "src:fence"] {
        must(&mut c, &["DEL", k]);
    }
    for (d, key) in [(&sm, "short:mutex"), (&srw, "short:rw")] {
        let r = c.call(&[b"RESTORE".as_slice(), key.as_bytes(), b"0", &d.raw], t.hang).unwrap();
        assert_eq!(r, Reply::Simple("OK".into()));
    }
    let mut waiter = open_conn(server.port, t.hang).unwrap();
    waiter.send(&["LOCK.ACQUIRE", "short:mutex", "bob", "5000", "WAIT", "10000"]).unwrap();
    let mut rwaiter = open_conn(server.port, t.hang).unwrap();
    rwaiter.send(&["RWLOCK.WLOCK", "short:rw", "bob", "5000", "WAIT", "10000"]).unwrap();
    for (w, key, old) in [(&mut waiter, "short:mutex", &sm), (&mut rwaiter, "short:rw", &srw)] {
        let r = w.read_within(Duration::from_secs(8)).unwrap();
        let at = now_ms();
        let Some(Reply::Int(tok)) = r else {
            panic!("the waiter on restored {key} got {r:?} instead of the lock when its lease ended")
        };
        assert!(
            at >= t0 + lease - 2,
            "the restored lease of {key} ended at +{} ms, before its deadline (+{lease})",
            at - t0
        );
        assert!(at <= t1 + lease + 2000, "the restored lease of {key} ended {} ms late", at - t1 - lease);
        let old_max = tokens_of(old).into_iter().max().unwrap_or(0);
        assert!(tok > old_max, "the waiter on {key} got token {tok}, not above the restored {old_max}");
    }
    drop(waiter);
    drop(rwaiter);
    assert!(server.is_alive() && other.is_alive());
}
