//! Corrupt `DUMP` payloads for `RESTORE`, and their judge: DUMPs of every type of ours,
//! truncated at every length, with random byte flips, with flips and the CRC64 trailer
//! recomputed (so they reach the module's loaders), with every field set to extreme
//! values, plus handcrafted payloads ([`field_cases`], [`byte_cases`],
//! [`handcrafted_cases`]). [`Restorer`] feeds them to `RESTORE` on a [`Target`] and checks
//! that each answers an error, or OK with a key in a state the commands could have
//! produced; never a crash or a hang. Used by `chaos_corrupt_dump` and `chaos_valgrind`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::RngCore;

use super::generator::{
    check_lock_info, check_rw_info, check_sem_info, get, get_int, is_internal_error, open_conn, Timing, BINARY,
    TOKEN_LIMIT,
};
use super::rdb::*;
use crate::support::chaos::full;
use crate::support::cmd::now_ms;
use crate::support::locks::{token_wall_part, MAX_TTL};
use crate::support::resp::{esc, hex, Raw, Reply};
use crate::support::seed::Dice;
use crate::support::server::Server;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expect {
    /// Error, or OK with a sane key.
    Any,
    /// The CRC is wrong: Redis must refuse.
    Refused,
    /// A valid payload (checks the test's own encoder).
    Accepted,
}

pub struct Case {
    pub label: String,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

pub fn case(label: String, bytes: Vec<u8>, expect: Expect) -> Case {
    Case { label, bytes, expect }
}

pub const INTERESTING_U64: [u64; 16] = [
    0,
    1,
    2,
    63,
    64,
    16383,
    16384,
    u32::MAX as u64,
    1 << 40,
    (1 << 41) + 7,
    1 << 53,
    (1 << 53) + 1,
    1 << 62,
    i64::MAX as u64,
    i64::MIN as u64,
    u64::MAX, // -1 as signed
];

/// Structured corruptions of one DUMP: each field set to extreme values, removed,
/// doubled, or replaced by the other kind; all with a valid CRC, so they reach the
/// module's loader.
pub fn field_cases(d: &Dump) -> Vec<Case> {
    let mut out = Vec::new();
    let now = now_ms();
    for (i, f) in d.fields.iter().enumerate() {
        let mut with = |label: String, v: Field| {
            let mut fields = d.fields.clone();
            fields[i] = v;
            out.push(case(
                format!("{}: field {i} {label}", d.name),
                d.build(7, d.module_id, &fields, true),
                Expect::Any,
            ));
        };
        match f {
            Field::U(_) => {
                for v in INTERESTING_U64 {
                    with(format!("= {v} ({} signed)", v as i64), Field::U(v));
                }
                for (what, v) in [
                    ("now - 1 (a past deadline)", now - 1),
                    ("now + 2^40 + 60000 (beyond the longest lease)", now + MAX_TTL + 60_000),
                    ("a token from one hour ahead", token_wall_part(now + 3_600_000)),
                ] {
                    with(format!("= {v} ({what})"), Field::U(v as u64));
                }
                with("as a string \"5\"".into(), Field::S(b"5".to_vec()));
            }
            Field::S(_) => {
                for (what, v) in [
                    ("empty", Vec::new()),
                    ("NUL", vec![0]),
                    ("binary", BINARY.to_vec()),
                    ("300 bytes", vec![b'o'; 300]),
                ] {
                    with(format!("= {what}"), Field::S(v));
                }
                with("as an unsigned 7".into(), Field::U(7));
            }
        }
        let mut fields = d.fields.clone();
        fields.remove(i);
        out.push(case(format!("{}: field {i} removed", d.name), d.build(7, d.module_id, &fields, true), Expect::Any));
        let mut fields = d.fields.clone();
        fields.insert(i, d.fields[i].clone());
        out.push(case(format!("{}: field {i} doubled", d.name), d.build(7, d.module_id, &fields, true), Expect::Any));
    }
    out
}

/// Byte-level corruptions of one DUMP.
pub fn byte_cases(d: &Dump, rng: &mut StdRng, big: bool) -> Vec<Case> {
    let raw = &d.raw;
    let body = d.body();
    let mut out = Vec::new();
    // Truncated at every length: the CRC no longer matches.
    for n in 0..raw.len() {
        out.push(case(format!("{}: truncated to {n} bytes", d.name), raw[..n].to_vec(), Expect::Refused));
    }
    // Truncated payload with the version and a recomputed CRC: the loader reads past the end.
    let payload = &body[..body.len() - 2];
    for n in 0..payload.len() {
        let mut b = payload[..n].to_vec();
        b.extend_from_slice(&d.version);
        out.push(case(format!("{}: payload truncated to {n} bytes, CRC recomputed", d.name), seal(&b), Expect::Any));
    }
    // Random flips, CRC left alone.
    for _ in 0..if big { 400 } else { 40 } {
        let mut b = raw.clone();
        let at = rng.below(b.len());
        b[at] ^= 1 + rng.below(255) as u8;
        out.push(case(format!("{}: byte {at} flipped to {:#04x}, CRC not fixed", d.name, b[at]), b, Expect::Refused));
    }
    // Bit flips with the CRC recomputed: every bit at full size, a sample otherwise.
    let mut flips: Vec<(usize, u8)> = (0..body.len()).flat_map(|i| (0..8).map(move |bit| (i, 1u8 << bit))).collect();
    if !big {
        for k in 0..flips.len() {
            let j = k + rng.below(flips.len() - k);
            flips.swap(k, j);
        }
        flips.truncate(90);
    }
    for (at, mask) in flips {
        let mut b = body.to_vec();
        b[at] ^= mask;
        out.push(case(format!("{}: byte {at} ^= {mask:#04x}, CRC recomputed", d.name), seal(&b), Expect::Any));
    }
    // Bytes set to values that mean something in RDB encodings, CRC recomputed.
    let specials = [0x00u8, 0xff, 0x7f, 0x80, 0x81, 0x40, 0xc0, 0xc3, 0x02, 0x05, 0x01];
    let mut sets: Vec<(usize, u8)> = (0..body.len()).flat_map(|i| specials.iter().map(move |v| (i, *v))).collect();
    if !big {
        for k in 0..sets.len() {
            let j = k + rng.below(sets.len() - k);
            sets.swap(k, j);
        }
        sets.truncate(60);
    }
    for (at, v) in sets {
        if body[at] == v {
            continue;
        }
        let mut b = body.to_vec();
        b[at] = v;
        out.push(case(format!("{}: byte {at} = {v:#04x}, CRC recomputed", d.name), seal(&b), Expect::Any));
    }
    // Several random bytes, inserted bytes, CRC recomputed.
    for _ in 0..if big { 600 } else { 40 } {
        let mut b = body.to_vec();
        let label = if rng.chance(50) {
            for _ in 0..2 + rng.below(3) {
                let at = rng.below(b.len());
                b[at] = rng.next_u64() as u8;
            }
            "2-4 random bytes"
        } else {
            let at = rng.below(b.len() - 2);
            let n = 1 + rng.below(8);
            for _ in 0..n {
                b.insert(at, rng.next_u64() as u8);
            }
            "random bytes inserted"
        };
        out.push(case(format!("{}: {label} ({}), CRC recomputed", d.name, hex(&b)), seal(&b), Expect::Any));
    }
    out
}

/// Handcrafted payloads: valid CRC, nonsense inside.
pub fn handcrafted_cases(m: &Dump, rw: &Dump, f: &Dump) -> Vec<Case> {
    use Field::{S, U};
    let now = now_ms();
    let token = token_wall_part(now) as u64;
    let later = (now + 600_000) as u64;
    let mut out = Vec::new();
    let mut add = |label: &str, d: &Dump, fields: Vec<Field>, expect: Expect| {
        out.push(case(format!("handcrafted {}: {label}", d.name), d.build(7, d.module_id, &fields, true), expect));
    };
    let hold = |mode: u64, owner: &str, token: u64, deadline: u64, holds: u64| {
        vec![U(mode), S(owner.into()), U(token), U(deadline), U(holds)]
    };
    // Mutex: owner, token, deadline, holds.
    add("a valid lock (encoder check)", m, vec![S(b"x".to_vec()), U(token), U(later), U(1)], Expect::Accepted);
    add("empty owner", m, vec![S(vec![]), U(token), U(later), U(1)], Expect::Any);
    add("negative token", m, vec![S(b"x".to_vec()), U(-5i64 as u64), U(later), U(1)], Expect::Any);
    add("token 0", m, vec![S(b"x".to_vec()), U(0), U(later), U(1)], Expect::Any);
    add("zero holds", m, vec![S(b"x".to_vec()), U(token), U(later), U(0)], Expect::Any);
    add("holds 2^63", m, vec![S(b"x".to_vec()), U(token), U(later), U(1 << 63)], Expect::Any);
    add("deadline in the past", m, vec![S(b"x".to_vec()), U(token), U(1), U(1)], Expect::Any);
    add("no fields", m, vec![], Expect::Any);
    add("only the owner", m, vec![S(b"x".to_vec())], Expect::Any);
    add("a fifth field", m, vec![S(b"x".to_vec()), U(token), U(later), U(1), U(1)], Expect::Any);
    // Read-write lock: count, then (mode, owner, token, deadline, holds) per hold.
    let two = |a: Vec<Field>, b: Vec<Field>| [vec![U(2)], a, b].concat();
    add("a valid reader (encoder check)", rw, [vec![U(1)], hold(1, "r", token, later, 1)].concat(), Expect::Accepted);
    add(
        "downgrade: writer and reader of one owner",
        rw,
        two(hold(0, "w", token, later, 1), hold(1, "w", token + 1, later, 1)),
        Expect::Any,
    );
    add("two writers", rw, two(hold(0, "w1", token, later, 1), hold(0, "w2", token + 1, later, 1)), Expect::Any);
    add(
        "a writer and another owner's read hold",
        rw,
        two(hold(0, "w", token, later, 1), hold(1, "r", token + 1, later, 1)),
        Expect::Any,
    );
    add("count 0", rw, vec![U(0)], Expect::Any);
    add("count 3 with 1 hold", rw, [vec![U(3)], hold(1, "r", token, later, 1)].concat(), Expect::Any);
    add(
        "count 1 with 2 holds",
        rw,
        [vec![U(1)], hold(1, "r", token, later, 1), hold(1, "s", token, later, 1)].concat(),
        Expect::Any,
    );
    add("count 2^62", rw, [vec![U(1 << 62)], hold(1, "r", token, later, 1)].concat(), Expect::Any);
    add("mode 2", rw, [vec![U(1)], hold(2, "r", token, later, 1)].concat(), Expect::Any);
    add("mode -1", rw, [vec![U(1)], hold(u64::MAX, "r", token, later, 1)].concat(), Expect::Any);
    add("empty owner", rw, [vec![U(1)], hold(1, "", token, later, 1)].concat(), Expect::Any);
    add("negative token", rw, [vec![U(1)], hold(1, "r", -3i64 as u64, later, 1)].concat(), Expect::Any);
    add("zero holds", rw, [vec![U(1)], hold(1, "r", token, later, 0)].concat(), Expect::Any);
    add("holds 2^63", rw, [vec![U(1)], hold(1, "r", token, later, 1 << 63)].concat(), Expect::Any);
    add(
        "the same reader twice",
        rw,
        two(hold(1, "r", token, later, 1), hold(1, "r", token + 1, later, 1)),
        Expect::Any,
    );
    add("one reader's lease over", rw, two(hold(1, "r", token, 5, 1), hold(1, "s", token + 1, later, 1)), Expect::Any);
    // Fence: highest, issued.
    add("a valid fence (encoder check)", f, vec![U(token + 10), U(token)], Expect::Accepted);
    add("issued above highest", f, vec![U(5), U(6)], Expect::Any);
    add("negative highest", f, vec![U(-1i64 as u64), U(0)], Expect::Any);
    add("zero and zero", f, vec![U(0), U(0)], Expect::Any);
    add("highest i64::MAX, issued 0 (FENCE.CHECK can record that)", f, vec![U(i64::MAX as u64), U(0)], Expect::Any);
    add("issued i64::MAX", f, vec![U(i64::MAX as u64), U(i64::MAX as u64)], Expect::Any);
    add("a third field", f, vec![U(5), U(5), U(5)], Expect::Any);
    add("a string instead of highest", f, vec![S(b"5".to_vec()), U(5)], Expect::Any);
    // One type's fields under another type's id.
    add("fence fields under the mutex id", m, vec![U(5), U(5)], Expect::Any);
    add("mutex fields under the fence id", f, vec![S(b"x".to_vec()), U(token), U(later), U(1)], Expect::Any);
    add("mutex fields under the rwlock id", rw, vec![S(b"x".to_vec()), U(token), U(later), U(1)], Expect::Any);
    // Encoding versions, module ids, RDB types, RDB versions, framing.
    for d in [m, rw, f] {
        out.extend(framing_cases(d));
    }
    let mut body = vec![5, 0xc0, 42];
    body.extend(encode_fields(&[U(token), U(later), U(1)]));
    out.push(case(
        "handcrafted lockmutex: integer-encoded owner 42".into(),
        m.build_raw(7, m.module_id, &body, true),
        Expect::Any,
    ));
    out
}

/// Payloads of `d` with its fields intact and the framing around them wrong: other
/// encoding versions, module ids and RDB types, no EOF, bytes after it, a newer RDB
/// version, opcodes our loaders never ask for, strings that claim more than there is.
pub fn framing_cases(d: &Dump) -> Vec<Case> {
    let mut out = Vec::new();
    for encver in [0u64, 2, 1023] {
        let id = (d.module_id & !1023) | encver;
        out.push(case(
            format!("handcrafted {}: encoding version {encver}", d.name),
            d.build(7, id, &d.fields, true),
            Expect::Any,
        ));
    }
    out.push(case(
        format!("handcrafted {}: unknown module type id", d.name),
        d.build(7, 0x1234_5678_9abc_d401, &d.fields, true),
        Expect::Any,
    ));
    for t in [0u8, 6, 2, 100] {
        out.push(case(
            format!("handcrafted {}: RDB type {t}", d.name),
            d.build(t, d.module_id, &d.fields, true),
            Expect::Any,
        ));
    }
    out.push(case(
        format!("handcrafted {}: no EOF opcode", d.name),
        d.build(7, d.module_id, &d.fields, false),
        Expect::Any,
    ));
    let mut body = encode_fields(&d.fields);
    body.extend_from_slice(&[0, 0xde, 0xad]);
    out.push(case(
        format!("handcrafted {}: bytes after EOF", d.name),
        d.build_raw(7, d.module_id, &body, false),
        Expect::Any,
    ));
    let mut newer = d.body().to_vec();
    let n = newer.len();
    newer[n - 2..].copy_from_slice(&[0xff, 0xff]);
    out.push(case(format!("handcrafted {}: RDB version 65535", d.name), seal(&newer), Expect::Any));
    // Opcodes Redis knows but our loaders never ask for (float, double, signed).
    for op in [1u8, 3, 4, 9] {
        let mut body = vec![op, 0x01];
        body.extend(encode_fields(&d.fields));
        out.push(case(
            format!("handcrafted {}: opcode {op} first", d.name),
            d.build_raw(7, d.module_id, &body, true),
            Expect::Any,
        ));
    }
    // A string whose length claims far more than there is (the allocation fails or the read does).
    for claim in [1u64 << 20, 1 << 31, 1 << 62] {
        let mut body = vec![5];
        rdb_len(&mut body, claim);
        body.extend_from_slice(b"abc");
        out.push(case(
            format!("handcrafted {}: string of claimed length {claim}", d.name),
            d.build_raw(7, d.module_id, &body, true),
            Expect::Any,
        ));
    }
    // LZF-compressed and integer-encoded strings where an owner is expected.
    let mut body = vec![5, 0xc3];
    rdb_len(&mut body, 4);
    rdb_len(&mut body, 100);
    body.extend_from_slice(&[0x1f, 0xff, 0xff, 0xff]);
    out.push(case(
        format!("handcrafted {}: corrupt LZF string", d.name),
        d.build_raw(7, d.module_id, &body, true),
        Expect::Any,
    ));
    out
}

/// Handcrafted semaphore payloads (layout: limit, hold count, then per hold owner,
/// permits, token, deadline, holds): valid ones the loader must take, and impossible
/// states (a bad limit, permits outside 1 to the limit, holders over the limit, the same
/// owner twice, bad tokens and holds, counts that lie), all with a valid CRC; plus the
/// framing cases.
pub fn handcrafted_sem_cases(sem: &Dump, m: &Dump) -> Vec<Case> {
    use Field::{S, U};
    let now = now_ms();
    let token = token_wall_part(now) as u64;
    let later = (now + 600_000) as u64;
    let mut out = Vec::new();
    let mut add = |label: &str, d: &Dump, fields: Vec<Field>, expect: Expect| {
        out.push(case(format!("handcrafted {}: {label}", d.name), d.build(7, d.module_id, &fields, true), expect));
    };
    let hold = |owner: &str, permits: u64, token: u64, deadline: u64, holds: u64| {
        vec![S(owner.into()), U(permits), U(token), U(deadline), U(holds)]
    };
    let sem_of = |limit: u64, holds: &[Vec<Field>]| [vec![U(limit), U(holds.len() as u64)], holds.concat()].concat();
    let max = 1u64 << 31;
    add("a valid holder (encoder check)", sem, sem_of(3, &[hold("x", 1, token, later, 1)]), Expect::Accepted);
    add(
        "two valid holders filling the limit (encoder check)",
        sem,
        sem_of(3, &[hold("x", 2, token, later, 2), hold("y", 1, token + 1, later, 1)]),
        Expect::Accepted,
    );
    add("the largest limit, all held (encoder check)", sem, sem_of(max, &[hold("x", max, token, later, 1)]), Expect::Accepted);
    add("no holders, limit 3", sem, sem_of(3, &[]), Expect::Any);
    add("no holders, limit 0", sem, sem_of(0, &[]), Expect::Any);
    add("no holders, limit 2^31 + 1", sem, sem_of(max + 1, &[]), Expect::Any);
    add("limit 0 with a holder", sem, sem_of(0, &[hold("x", 1, token, later, 1)]), Expect::Any);
    add("limit 2^31 + 1 with a holder", sem, sem_of(max + 1, &[hold("x", 1, token, later, 1)]), Expect::Any);
    add("limit 2^64 - 1 with a holder", sem, sem_of(u64::MAX, &[hold("x", 1, token, later, 1)]), Expect::Any);
    add("permits 0", sem, sem_of(3, &[hold("x", 0, token, later, 1)]), Expect::Any);
    add("permits above the limit", sem, sem_of(3, &[hold("x", 4, token, later, 1)]), Expect::Any);
    add("permits 2^32 + 1 of limit 1", sem, sem_of(1, &[hold("x", (1 << 32) + 1, token, later, 1)]), Expect::Any);
    add(
        "holders over the limit",
        sem,
        sem_of(3, &[hold("x", 2, token, later, 1), hold("y", 2, token + 1, later, 1)]),
        Expect::Any,
    );
    add(
        "two holders of 2^64 - 1 permits (a sum that wraps)",
        sem,
        sem_of(3, &[hold("x", u64::MAX, token, later, 1), hold("y", u64::MAX, token + 1, later, 1)]),
        Expect::Any,
    );
    add(
        "holders over the limit, one lease over",
        sem,
        sem_of(3, &[hold("x", 2, token, 5, 1), hold("y", 2, token + 1, later, 1)]),
        Expect::Any,
    );
    add(
        "the same owner twice",
        sem,
        sem_of(3, &[hold("x", 1, token, later, 1), hold("x", 1, token + 1, later, 1)]),
        Expect::Any,
    );
    add("empty owner", sem, sem_of(3, &[hold("", 1, token, later, 1)]), Expect::Any);
    add("token 0", sem, sem_of(3, &[hold("x", 1, 0, later, 1)]), Expect::Any);
    add("negative token", sem, sem_of(3, &[hold("x", 1, -3i64 as u64, later, 1)]), Expect::Any);
    add("zero holds", sem, sem_of(3, &[hold("x", 1, token, later, 0)]), Expect::Any);
    add("holds 2^63", sem, sem_of(3, &[hold("x", 1, token, later, 1 << 63)]), Expect::Any);
    add("deadline in the past", sem, sem_of(3, &[hold("x", 1, token, 1, 1)]), Expect::Any);
    add(
        "one holder's lease over",
        sem,
        sem_of(3, &[hold("x", 1, token, 5, 1), hold("y", 2, token + 1, later, 1)]),
        Expect::Any,
    );
    add("count 3 with 1 hold", sem, [vec![U(3), U(3)], hold("x", 1, token, later, 1)].concat(), Expect::Any);
    add(
        "count 1 with 2 holds",
        sem,
        [vec![U(3), U(1)], hold("x", 1, token, later, 1), hold("y", 1, token, later, 1)].concat(),
        Expect::Any,
    );
    add("count 2^62", sem, [vec![U(3), U(1 << 62)], hold("x", 1, token, later, 1)].concat(), Expect::Any);
    add("no fields", sem, vec![], Expect::Any);
    add("only the limit", sem, vec![U(3)], Expect::Any);
    add("an unsigned owner", sem, vec![U(3), U(1), U(7), U(1), U(token), U(later), U(1)], Expect::Any);
    add("a string limit", sem, [vec![S(b"3".to_vec()), U(1)], hold("x", 1, token, later, 1)].concat(), Expect::Any);
    // One type's fields under another type's id.
    add("mutex fields under the semaphore id", sem, vec![S(b"x".to_vec()), U(token), U(later), U(1)], Expect::Any);
    add("semaphore fields under the mutex id", m, sem_of(3, &[hold("x", 1, token, later, 1)]), Expect::Any);
    out.extend(framing_cases(sem));
    out
}

/// A server to RESTORE into, that a case may hang, crash or poison.
pub trait Target {
    fn port(&self) -> u16;
    fn log_tail(&self) -> String;
    fn is_alive(&self) -> bool;
    /// Replaces the server with a fresh one; false when that is not possible.
    fn restart(&mut self) -> bool;
}

pub struct Harnessed {
    pub server: Option<Server>,
    pub config: Vec<String>,
}

impl Harnessed {
    pub fn start(config: &[&str]) -> Harnessed {
        Harnessed { server: Some(Server::start(config)), config: config.iter().map(|s| s.to_string()).collect() }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server")
    }
}

impl Target for Harnessed {
    fn port(&self) -> u16 {
        self.server().port
    }

    fn log_tail(&self) -> String {
        self.server().log_tail(30)
    }

    fn is_alive(&self) -> bool {
        self.server().is_alive()
    }

    fn restart(&mut self) -> bool {
        if let Some(old) = self.server.take() {
            // Dropping a server that died panics (the harness reports it): expected here.
            let _ = catch_unwind(AssertUnwindSafe(move || drop(old)));
        }
        let config: Vec<&str> = self.config.iter().map(String::as_str).collect();
        self.server = Some(Server::start(&config));
        true
    }
}

/// A server that cannot be replaced (under valgrind: its log is the point): the first
/// failure ends the run.
impl Target for Server {
    fn port(&self) -> u16 {
        self.port
    }

    fn log_tail(&self) -> String {
        Server::log_tail(self, 30)
    }

    fn is_alive(&self) -> bool {
        Server::is_alive(self)
    }

    fn restart(&mut self) -> bool {
        false
    }
}

pub struct Failure {
    pub category: String,
    pub label: String,
    pub detail: String,
    pub payload: Vec<u8>,
    pub log: String,
}

/// Feeds cases to `RESTORE chaos:dst 0 <payload> REPLACE` and judges the outcome.
pub struct Restorer<'a> {
    pub target: &'a mut dyn Target,
    pub conn: Raw,
    pub t: Timing,
    /// Judge the state of accepted keys (off under valgrind: memory only there).
    pub judge: bool,
    pub reload_percent: u32,
    pub rng: StdRng,
    pub last_probe: i64,
    pub failures: Vec<Failure>,
    pub max_failures: usize,
    pub cases: usize,
    pub accepted: usize,
}

pub const DST: &str = "chaos:dst";

impl<'a> Restorer<'a> {
    pub fn new(target: &'a mut dyn Target, t: Timing, judge: bool, rng: StdRng) -> Restorer<'a> {
        let conn = open_conn(target.port(), t.hang).unwrap_or_else(|e| panic!("{e}"));
        Restorer {
            target,
            conn,
            t,
            judge,
            reload_percent: 10,
            rng,
            last_probe: 0,
            failures: Vec::new(),
            max_failures: std::env::var("CHAOS_MAX_FAILURES").ok().and_then(|v| v.parse().ok()).unwrap_or(if full() {
                40
            } else {
                15
            }),
            cases: 0,
            accepted: 0,
        }
    }

    pub fn done(&self) -> bool {
        self.failures.len() >= self.max_failures
    }

    /// One command, one reply, within the hang limit; a dead server is "crash".
    pub fn q<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, String> {
        let shown = || args.iter().map(|a| esc(a.as_ref())).collect::<Vec<_>>().join(" ");
        match self.conn.call(args, self.t.hang) {
            Ok(r) => {
                if let Some(e) = r.errors().into_iter().find(|e| is_internal_error(e)) {
                    return Err(format!("panic: {} answered an internal error: {e}", shown()));
                }
                Ok(r)
            }
            Err(e) => Err(self.classify(&format!("{} failed: {e}", shown()))),
        }
    }

    pub fn classify(&self, what: &str) -> String {
        if !self.target.is_alive() {
            format!("crash: the server died: {what}")
        } else if what.contains("no reply") {
            format!("hang: the server stopped answering: {what}")
        } else {
            format!("connection: {what}")
        }
    }

    pub fn run(&mut self, c: &Case) {
        if self.done() {
            return;
        }
        self.cases += 1;
        match self.try_case(c) {
            Ok(accepted) => self.accepted += accepted as usize,
            Err(detail) => {
                let category = detail.split(':').next().unwrap_or("").to_string();
                let log = self.target.log_tail();
                self.failures.push(Failure { category, label: c.label.clone(), detail, payload: c.bytes.clone(), log });
                if !self.target.restart() {
                    panic!("{}", self.report());
                }
                self.conn = open_conn(self.target.port(), self.t.hang).unwrap_or_else(|e| panic!("{e}"));
                self.last_probe = 0;
            }
        }
    }

    pub fn try_case(&mut self, c: &Case) -> Result<bool, String> {
        let cmd: [&[u8]; 5] = [b"RESTORE", DST.as_bytes(), b"0", &c.bytes, b"REPLACE"];
        let r = self.conn.call_then_ping(&cmd, self.t.hang).map_err(|e| self.classify(&format!("RESTORE: {e}")))?;
        let accepted = match &r {
            Reply::Err(e) if is_internal_error(e) => return Err(format!("panic: RESTORE answered {e}")),
            Reply::Err(e) if c.expect == Expect::Accepted => {
                return Err(format!("harness: a valid payload was refused: {e}"))
            }
            Reply::Err(_) => false,
            Reply::Simple(s) if s == "OK" => {
                if c.expect == Expect::Refused {
                    return Err("accepted bad CRC: RESTORE took a payload whose checksum is wrong".into());
                }
                true
            }
            other => return Err(format!("unexpected reply: RESTORE answered {}", other.brief())),
        };
        if accepted {
            self.sanity()?;
            if self.judge {
                self.leases_still_end()?;
            }
        }
        // The server's token clock must still work, and stay below 2^53.
        let probe = self.q(&["FENCE.NEXT", "chaos:probe"])?;
        match probe {
            Reply::Int(t) if t > self.last_probe && (t < TOKEN_LIMIT || !self.judge) => self.last_probe = t,
            other => {
                return Err(format!(
                    "token clock poisoned: after this payload was {}, FENCE.NEXT on an unrelated key answered {} (previous {})",
                    if accepted { "accepted" } else { "refused" },
                    other.brief(),
                    self.last_probe
                ))
            }
        }
        if self.rng.chance(20) {
            match self.q(&["LOCK.ACQUIRE", "chaos:probe:m", "p", "100000"])? {
                Reply::Int(t) if t > 0 && (t < TOKEN_LIMIT || !self.judge) => {}
                other => {
                    return Err(format!(
                        "token clock poisoned: LOCK.ACQUIRE on an unrelated key answered {}",
                        other.brief()
                    ))
                }
            }
            self.q(&["LOCK.RELEASE", "chaos:probe:m", "p"])?;
        }
        self.conn.quiet().map_err(|e| format!("reply count: {e}"))?;
        Ok(accepted)
    }

    /// The restored key is in a state our commands could have produced.
    pub fn sanity(&mut self) -> Result<(), String> {
        let ty = self.q(&["TYPE", DST])?;
        let ty = String::from_utf8_lossy(&ty.bytes().unwrap_or_default()).into_owned();
        match ty.as_str() {
            "lockmutex" => {
                let info = self.q(&["LOCK.INFO", DST])?;
                if self.judge {
                    check_lock_info(&info)
                        .map_err(|e| format!("insane state: LOCK.INFO answered {}: {e}", info.brief()))?;
                }
                if info == Reply::Nil {
                    self.must_vanish()?;
                } else {
                    // The holder can take it again and release it.
                    let m = info.fields().map_err(|e| format!("insane state: {e}"))?;
                    let owner = get(&m, "owner")?.bytes().unwrap_or_default();
                    let token = get_int(&m, "token").unwrap_or(0);
                    let again = self.q(&[b"LOCK.ACQUIRE".as_slice(), DST.as_bytes(), &owner, b"100000"])?;
                    if self.judge && again != Reply::Int(token) && again != Reply::Nil {
                        return Err(format!(
                            "insane state: the holder re-acquiring got {} instead of its token {token}",
                            again.brief()
                        ));
                    }
                    self.q(&[b"LOCK.RELEASE".as_slice(), DST.as_bytes(), &owner])?;
                }
            }
            "lockrwlck" => {
                let info = self.q(&["RWLOCK.INFO", DST])?;
                if self.judge {
                    check_rw_info(&info)
                        .map_err(|e| format!("insane state: RWLOCK.INFO answered {}: {e}", info.brief()))?;
                }
                if info == Reply::Nil {
                    self.must_vanish()?;
                } else {
                    let r = self.q(&["RWLOCK.RLOCK", DST, "chaos:newreader", "100000"])?;
                    if !matches!(r, Reply::Int(_) | Reply::Nil | Reply::Err(_)) {
                        return Err(format!("insane state: RWLOCK.RLOCK answered {}", r.brief()));
                    }
                    self.q(&["RWLOCK.RUNLOCK", DST, "chaos:newreader"])?;
                }
            }
            "locksemph" => {
                let info = self.q(&["SEM.INFO", DST])?;
                if self.judge {
                    check_sem_info(&info)
                        .map_err(|e| format!("insane state: SEM.INFO answered {}: {e}", info.brief()))?;
                }
                if info == Reply::Nil {
                    self.must_vanish()?;
                } else {
                    self.sem_works(&info)?;
                }
            }
            "lockfence" => {
                let current = self.q(&["FENCE.CURRENT", DST])?;
                let Reply::Int(current) = current else {
                    return Err(format!("insane state: FENCE.CURRENT answered {}", current.brief()));
                };
                if self.judge && current < 0 {
                    return Err(format!("insane state: FENCE.CURRENT answered {current}"));
                }
                match self.q(&["FENCE.NEXT", DST])? {
                    Reply::Int(t) if t > current => {}
                    Reply::Err(e) if e.contains("exhausted") && current > i64::MAX - (1 << 20) => {}
                    other if self.judge => {
                        return Err(format!(
                            "insane state: FENCE.NEXT after FENCE.CURRENT {current} answered {}",
                            other.brief()
                        ))
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        self.q(&["DEBUG", "DIGEST-VALUE", DST])?;
        self.q(&["MEMORY", "USAGE", DST])?;
        if self.rng.chance(self.reload_percent) {
            let r = self.q(&["DEBUG", "RELOAD"])?;
            if r != Reply::Simple("OK".into()) {
                return Err(format!("reload: an accepted payload does not survive DEBUG RELOAD: {}", r.brief()));
            }
        }
        self.q(&["DEL", DST])?;
        Ok(())
    }

    /// A restored semaphore works as its SEM.INFO says: each holder re-acquires its own
    /// permits and gets its token back (and gives that hold back); one permit more than
    /// `available` is refused and exactly `available` is granted, with a token above
    /// every holder's.
    pub fn sem_works(&mut self, info: &Reply) -> Result<(), String> {
        let m = info.fields().map_err(|e| format!("insane state: {e}"))?;
        let limit = get_int(&m, "limit")?.to_string();
        let available = get_int(&m, "available")?;
        let holders = match get(&m, "holders")? {
            Reply::Array(hs) => hs.clone(),
            other => return Err(format!("insane state: SEM.INFO holders {}", other.brief())),
        };
        let mut highest = 0;
        for h in &holders {
            let hm = h.fields().map_err(|e| format!("insane state: {e}"))?;
            let owner = get(&hm, "owner")?.bytes().unwrap_or_default();
            let permits = get_int(&hm, "permits")?.to_string();
            let token = get_int(&hm, "token")?;
            highest = highest.max(token);
            let again = self.q(&[
                b"SEM.ACQUIRE".as_slice(),
                DST.as_bytes(),
                &owner,
                limit.as_bytes(),
                b"100000",
                b"COUNT",
                permits.as_bytes(),
            ])?;
            // (Nil: its lease ended in between.)
            if self.judge && again != Reply::Int(token) && again != Reply::Nil {
                return Err(format!(
                    "insane state: the holder {} re-acquiring its {permits} permits got {} instead of its token {token}",
                    esc(&owner),
                    again.brief()
                ));
            }
            // The hold taken, given back (as for the mutex): the state stays the restored one.
            if again == Reply::Int(token) {
                self.q(&[b"SEM.RELEASE".as_slice(), DST.as_bytes(), &owner])?;
            }
        }
        let newcomer = |n: i64| -> Vec<Vec<u8>> {
            ["SEM.ACQUIRE", DST, "chaos:newcomer", &limit, "100000", "COUNT", &n.to_string()]
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect()
        };
        if available < get_int(&m, "limit")? {
            let r = self.q(&newcomer(available + 1))?;
            if self.judge && r != Reply::Nil {
                return Err(format!(
                    "insane state: {} permits granted where SEM.INFO said {available} were free: {}",
                    available + 1,
                    r.brief()
                ));
            }
        }
        if available > 0 {
            match self.q(&newcomer(available))? {
                Reply::Int(t) if t > highest => {}
                // Leases may have ended in between, but never taken permits.
                other if self.judge => {
                    return Err(format!(
                        "insane state: {available} free permits (SEM.INFO) not granted, or not with a token above {highest}: {}",
                        other.brief()
                    ))
                }
                _ => {}
            }
            self.q(&["SEM.RELEASE", DST, "chaos:newcomer"])?;
        }
        Ok(())
    }

    /// The server still ends leases by itself: a 1 ms lease on another key goes.
    pub fn leases_still_end(&mut self) -> Result<(), String> {
        match self.q(&["LOCK.ACQUIRE", "chaos:probe:lease", "p", "1"])? {
            Reply::Int(_) => {}
            Reply::Err(e) if e.contains("exhausted") => {
                return Err(format!("token clock poisoned: LOCK.ACQUIRE of a free unrelated key answered {e}"))
            }
            other => return Err(format!("insane state: LOCK.ACQUIRE of a free key answered {}", other.brief())),
        }
        let deadline = Instant::now() + self.t.slack;
        loop {
            std::thread::sleep(Duration::from_millis(2));
            if self.q(&["EXISTS", "chaos:probe:lease"])? == Reply::Int(0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let info = self.q(&["LOCK.INFO", "chaos:probe:lease"])?;
                return Err(format!(
                    "leases stopped ending: after this payload, a 1 ms lease on another key still has its key {:?} later (LOCK.INFO {})",
                    self.t.slack,
                    info.brief()
                ));
            }
        }
    }

    /// A free lock leaves no key behind: the module deletes it soon.
    pub fn must_vanish(&mut self) -> Result<(), String> {
        if !self.judge {
            return Ok(());
        }
        let deadline = Instant::now() + self.t.slack;
        loop {
            if self.q(&["EXISTS", DST])? == Reply::Int(0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                // Is it this key, or has the server stopped ending leases altogether?
                self.leases_still_end()?;
                return Err("free key left behind: a restored lock with no holder keeps its key".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn report(&self) -> String {
        if let Ok(path) = std::env::var("CHAOS_FAILURES_FILE") {
            let all: Vec<String> =
                self.failures.iter().map(|f| format!("{}\t{}\t{}", f.label, f.detail, hex(&f.payload))).collect();
            let _ = fs::write(path, all.join("\n"));
        }
        let mut by_category: BTreeMap<&str, Vec<&Failure>> = BTreeMap::new();
        for f in &self.failures {
            by_category.entry(&f.category).or_default().push(f);
        }
        let mut out = format!(
            "{} of {} corrupt payloads went wrong (stopped after {}):\n",
            self.failures.len(),
            self.cases,
            self.max_failures
        );
        for (cat, fs) in by_category {
            out.push_str(&format!("\n=== {cat}: {} case(s)\n", fs.len()));
            for f in fs.iter().take(3) {
                out.push_str(&format!("  - {}\n    {}\n    payload (hex): {}\n", f.label, f.detail, hex(&f.payload)));
            }
            for f in fs.iter().skip(3).take(40) {
                out.push_str(&format!("  - {}\n", f.label));
            }
            if let Some(f) = fs.first() {
                if cat == "crash" || cat == "hang" {
                    out.push_str(&format!("    server log tail:\n{}\n", f.log));
                }
            }
        }
        out
    }
}

/// Creates one key of each type in a rich state and DUMPs it.
pub fn genuine_dumps(conn: &mut Raw, t: Timing, ttl: i64) -> (Dump, Dump, Dump, Dump) {
    let ttl = ttl.to_string();
    let mut run = |args: &[&str]| conn.call(args, t.hang).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    for args in [
        vec!["LOCK.ACQUIRE", "src:mutex", "alice", &ttl],
        vec!["LOCK.ACQUIRE", "src:mutex", "alice", &ttl],
        vec!["RWLOCK.WLOCK", "src:rw", "writer", &ttl],
        vec!["RWLOCK.RLOCK", "src:rw", "writer", &ttl],
        vec!["RWLOCK.RLOCK", "src:rw", "writer", &ttl],
        vec!["RWLOCK.RLOCK", "src:readers", "r1", &ttl],
        vec!["RWLOCK.RLOCK", "src:readers", "r2", &ttl],
        vec!["RWLOCK.RLOCK", "src:readers", "r2", &ttl],
        vec!["RWLOCK.RLOCK", "src:readers", "r3", &ttl],
        vec!["FENCE.NEXT", "src:fence"],
    ] {
        let r = run(&args);
        assert!(matches!(r, Reply::Int(t) if t > 0), "{args:?} answered {}", r.brief());
    }
    let current = run(&["FENCE.CURRENT", "src:fence"]).int().unwrap();
    let r = run(&["FENCE.CHECK", "src:fence", &(current + 7).to_string()]);
    assert_eq!(r, Reply::Int(1), "FENCE.CHECK");
    let mut dump = |key: &str, name: &'static str| {
        let r = run(&["DUMP", key]);
        let Reply::Bulk(raw) = r else { panic!("DUMP {key} answered {}", r.brief()) };
        Dump::parse(name, &raw)
    };
    let m = dump("src:mutex", "lockmutex");
    let rw = dump("src:rw", "lockrwlck");
    let readers = dump("src:readers", "lockrwlck (3 readers)");
    let f = dump("src:fence", "lockfence");
    assert_eq!(m.fields.len(), 4, "mutex layout (owner, token, deadline, holds): {:?}", m.fields);
    assert_eq!(rw.fields.len(), 1 + 2 * 5, "rwlock layout (count, then 5 fields per hold): {:?}", rw.fields);
    assert_eq!(f.fields.len(), 2, "fence layout (highest, issued): {:?}", f.fields);
    (m, rw, readers, f)
}

/// Creates two semaphores and DUMPs them: three holders with their own permits, leases
/// and hold counts (`locksemph`), and one owner holding the whole limit twice
/// (`locksemph (whole limit)`).
pub fn genuine_sem_dumps(conn: &mut Raw, t: Timing, ttl: i64) -> (Dump, Dump) {
    let ttl = ttl.to_string();
    let longer = (ttl.parse::<i64>().unwrap() + 50_000).to_string();
    let mut run = |args: &[&str]| conn.call(args, t.hang).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    for args in [
        vec!["SEM.ACQUIRE", "src:sem", "alice", "5", &ttl, "COUNT", "2"],
        vec!["SEM.ACQUIRE", "src:sem", "alice", "5", &ttl, "COUNT", "2"],
        vec!["SEM.ACQUIRE", "src:sem", "bob", "5", &longer],
        vec!["SEM.ACQUIRE", "src:sem", "carol", "5", &ttl, "COUNT", "2"],
        vec!["SEM.ACQUIRE", "src:semall", "dave", "3", &ttl, "COUNT", "3"],
        vec!["SEM.ACQUIRE", "src:semall", "dave", "3", &ttl, "COUNT", "3"],
    ] {
        let r = run(&args);
        assert!(matches!(r, Reply::Int(t) if t > 0), "{args:?} answered {}", r.brief());
    }
    let mut dump = |key: &str, name: &'static str| {
        let r = run(&["DUMP", key]);
        let Reply::Bulk(raw) = r else { panic!("DUMP {key} answered {}", r.brief()) };
        Dump::parse(name, &raw)
    };
    let s = dump("src:sem", "locksemph");
    let all = dump("src:semall", "locksemph (whole limit)");
    assert_eq!(s.fields.len(), 2 + 3 * 5, "semaphore layout (limit, count, then 5 fields per hold): {:?}", s.fields);
    assert_eq!(&s.fields[..2], &[Field::U(5), Field::U(3)], "semaphore layout: limit 5, 3 holds: {:?}", s.fields);
    assert_eq!(&all.fields[..2], &[Field::U(3), Field::U(1)], "semaphore layout: limit 3, 1 hold: {:?}", all.fields);
    (s, all)
}
