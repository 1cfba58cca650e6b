//! RDB encoding of the module's values, as `DUMP` shows them: Redis's CRC64, the length
//! encoding, the module opcodes, and [`Dump`], a `DUMP` taken apart and built again (with
//! changed fields, another module id, another RDB type...), for the corrupt-payload suites.

#![allow(dead_code)]

use crate::support::resp::hex;

/// Redis's crc64: Jones polynomial 0xad93d23594c935a9, reflected in and out, init 0,
/// no final xor. Bitwise, which is plenty for payloads of a few hundred bytes.
pub fn crc64(data: &[u8]) -> u64 {
    const POLY_REFLECTED: u64 = 0x95ac_9329_ac4b_c9b5; // 0xad93d23594c935a9 bit-reversed
    let mut crc = 0u64;
    for &b in data {
        crc ^= u64::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ POLY_REFLECTED } else { crc >> 1 };
        }
    }
    crc
}

/// Appends the CRC64 of `body` (payload and RDB version), little-endian, as DUMP does.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&crc64(body).to_le_bytes());
    out
}

pub fn rdb_len(out: &mut Vec<u8>, v: u64) {
    if v < 64 {
        out.push(v as u8);
    } else if v < 16384 {
        out.push(0x40 | (v >> 8) as u8);
        out.push(v as u8);
    } else if v <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// One value a module saved: `RedisModule_SaveUnsigned`/`SaveSigned` (opcode 2, a
/// length-encoded u64) or `SaveStringBuffer` (opcode 5, an RDB string).
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    U(u64),
    S(Vec<u8>),
}

pub fn encode_fields(fields: &[Field]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields {
        match f {
            Field::U(v) => {
                out.push(2);
                rdb_len(&mut out, *v);
            }
            Field::S(s) => {
                out.push(5);
                rdb_len(&mut out, s.len() as u64);
                out.extend_from_slice(s);
            }
        }
    }
    out
}

pub fn read_len(b: &[u8], at: &mut usize) -> Option<(u64, bool)> {
    let first = *b.get(*at)?;
    *at += 1;
    Some(match first >> 6 {
        0 => (u64::from(first & 0x3f), false),
        1 => {
            let second = *b.get(*at)?;
            *at += 1;
            ((u64::from(first & 0x3f) << 8) | u64::from(second), false)
        }
        2 if first == 0x80 => {
            let v = u32::from_be_bytes(b.get(*at..*at + 4)?.try_into().ok()?);
            *at += 4;
            (u64::from(v), false)
        }
        2 if first == 0x81 => {
            let v = u64::from_be_bytes(b.get(*at..*at + 8)?.try_into().ok()?);
            *at += 8;
            (v, false)
        }
        3 => (u64::from(first & 0x3f), true),
        _ => return None,
    })
}

/// A DUMP of one of our keys, taken apart: RDB type, module id (type id and encoding
/// version), the saved fields, RDB version.
#[derive(Debug, Clone)]
pub struct Dump {
    pub name: &'static str,
    pub raw: Vec<u8>,
    pub module_id: u64,
    pub fields: Vec<Field>,
    pub version: [u8; 2],
}

impl Dump {
    pub fn parse(name: &'static str, raw: &[u8]) -> Dump {
        assert!(raw.len() > 12, "{name}: DUMP too short: {}", hex(raw));
        let (body, crc) = raw.split_at(raw.len() - 8);
        assert_eq!(
            crc64(body).to_le_bytes(),
            crc,
            "{name}: our CRC64 differs from the one Redis put in DUMP {}: the test's crc64 is wrong",
            hex(raw)
        );
        let version = [body[body.len() - 2], body[body.len() - 1]];
        let payload = &body[..body.len() - 2];
        assert_eq!(payload[0], 7, "{name}: RDB type {} is not RDB_TYPE_MODULE_2 (7)", payload[0]);
        let mut at = 1;
        let (module_id, _) = read_len(payload, &mut at).expect("module id");
        let mut fields = Vec::new();
        loop {
            let op = payload[at];
            at += 1;
            match op {
                0 => break,
                2 => fields.push(Field::U(read_len(payload, &mut at).expect("unsigned").0)),
                5 => {
                    let (len, encoded) = read_len(payload, &mut at).expect("string length");
                    assert!(!encoded, "{name}: our owners are saved plain, got an encoded string in {}", hex(raw));
                    fields.push(Field::S(payload[at..at + len as usize].to_vec()));
                    at += len as usize;
                }
                other => panic!("{name}: unexpected module opcode {other} in {}", hex(raw)),
            }
        }
        assert_eq!(at, payload.len(), "{name}: bytes after the EOF opcode in {}", hex(raw));
        let d = Dump { name, raw: raw.to_vec(), module_id, fields, version };
        assert_eq!(
            d.build(7, module_id, &d.fields, true),
            d.raw,
            "{name}: re-encoding the parsed DUMP does not give it back"
        );
        d
    }

    /// The payload of `fields` under `module_id`, sealed with a correct CRC.
    pub fn build(&self, rdb_type: u8, module_id: u64, fields: &[Field], eof: bool) -> Vec<u8> {
        self.build_raw(rdb_type, module_id, &encode_fields(fields), eof)
    }

    pub fn build_raw(&self, rdb_type: u8, module_id: u64, body: &[u8], eof: bool) -> Vec<u8> {
        let mut out = vec![rdb_type];
        rdb_len(&mut out, module_id);
        out.extend_from_slice(body);
        if eof {
            out.push(0);
        }
        out.extend_from_slice(&self.version);
        seal(&out)
    }

    /// Everything but the CRC (payload and RDB version).
    pub fn body(&self) -> &[u8] {
        &self.raw[..self.raw.len() - 8]
    }
}

/// The tokens a DUMP carries, by the layouts in src/persist/*.rs.
pub fn tokens_of(d: &Dump) -> Vec<i64> {
    let at = |i: usize| match d.fields.get(i) {
        Some(Field::U(v)) => *v as i64,
        other => panic!("{}: field {i} is {other:?}, not a token", d.name),
    };
    if d.name.starts_with("lockmutex") {
        vec![at(1)]
    } else if d.name.starts_with("lockrwlck") {
        (0..at(0) as usize).map(|h| at(1 + 5 * h + 2)).collect()
    } else if d.name.starts_with("locksemph") {
        // limit, count, then (owner, permits, token, deadline, holds) per hold.
        (0..at(1) as usize).map(|h| at(2 + 5 * h + 2)).collect()
    } else {
        vec![at(0), at(1)]
    }
}
