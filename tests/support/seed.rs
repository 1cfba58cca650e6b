//! Seeds and random sources: every randomized test takes one seed, prints it, and draws
//! from `rand`'s `StdRng` seeded from it (one stream per thread or purpose), so a failure
//! replays with `CHAOS_SEED=<seed>` (decimal or 0x-hex).

#![allow(dead_code)]

use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::chaos::full;

pub fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The seed of one test: `CHAOS_SEED`, else fresh. Printed (with how to replay it), so a
/// failure can be run again.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(s) => parse_seed(&s).unwrap_or_else(|| panic!("CHAOS_SEED={s:?} is not an integer")),
        Err(_) => {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
            (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 40) ^ fnv(test.as_bytes())
        }
    };
    eprintln!("{test}: seed {seed} (replay with CHAOS_SEED={seed}{})", repro_env());
    seed
}

/// What else a replay needs in its environment.
pub fn repro_env() -> &'static str {
    if full() {
        " CHAOS_FULL=1"
    } else {
        ""
    }
}

/// FNV-1a, to derive independent streams from one seed by name.
pub fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, c| (h ^ u64::from(*c)).wrapping_mul(0x100_0000_01b3))
}

/// The random source `stream` of a run with `seed` (the same sequence on every machine).
pub fn rng(seed: u64, stream: &str) -> StdRng {
    StdRng::seed_from_u64(seed ^ fnv(stream.as_bytes()))
}

/// Small conveniences over any `rand::Rng`.
pub trait Dice: Rng {
    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            0
        } else {
            self.gen_range(0..n)
        }
    }

    /// True with `percent` % probability.
    fn chance(&mut self, percent: u32) -> bool {
        self.gen_range(0..100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = self.below(items.len());
        &items[i]
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        self.gen_range(lo..=hi)
    }
}

impl<R: Rng + ?Sized> Dice for R {}
