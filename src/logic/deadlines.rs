//! The expiry index: which key's lease ends next.
//!
//! One ordered set for the whole server, so the module needs a single timer armed for
//! the earliest deadline, and finding it never scans the locks. Entries name a key by
//! database and name; the glue re-checks the key when an entry falls due, so an entry
//! left behind by a key that was deleted or renamed does no harm beyond its bytes, and
//! the glue removes those too when Redis tells it the key went away.

use std::collections::BTreeMap;

use super::Millis;

pub type Db = i32;

/// The keys whose deadline falls in one millisecond, packed: one 8-byte slot per key
/// (a 32-bit tag of database and name, compared first, and where its record starts) and
/// a byte arena of records (database, name length, name). Under load hundreds of leases
/// share a millisecond; packed so, the index costs about 25 bytes per held lock plus the
/// name, with no allocation per key. A removed key's record stays in the arena as
/// garbage until the garbage outweighs the live records.
#[derive(Debug, Default)]
struct Bucket {
    slots: Vec<(u32, u32)>,
    arena: Vec<u8>,
    garbage: usize,
}

/// Bytes of a record before its name: the database (4) and the name's length (4).
const RECORD_HEAD: usize = 8;

/// FNV-1a of database and name: only used to skip slots that cannot match.
fn tag(db: Db, key: &[u8]) -> u32 {
    let step = |h: u32, b: u8| (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    let h = db.to_le_bytes().into_iter().fold(0x811c_9dc5u32, step);
    key.iter().fold(h, |h, b| step(h, *b))
}

impl Bucket {
    fn record(&self, at: u32) -> (Db, &[u8]) {
        let at = at as usize;
        let head = &self.arena[at..at + RECORD_HEAD];
        let db = Db::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(head[4..].try_into().expect("4 bytes")) as usize;
        (db, &self.arena[at + RECORD_HEAD..at + RECORD_HEAD + len])
    }

    fn push(&mut self, db: Db, key: &[u8]) {
        let at = u32::try_from(self.arena.len()).expect("a bucket's arena stays under 4 GiB");
        self.arena.extend_from_slice(&db.to_le_bytes());
        self.arena.extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.arena.extend_from_slice(key);
        self.slots.push((tag(db, key), at));
    }

    /// Removes one slot of `db`/`key`; true when there was one.
    fn remove(&mut self, db: Db, key: &[u8]) -> bool {
        let t = tag(db, key);
        let Some(i) = self.slots.iter().position(|&(st, at)| st == t && self.record(at) == (db, key)) else {
            return false;
        };
        self.slots.swap_remove(i);
        self.garbage += RECORD_HEAD + key.len();
        if self.garbage > self.arena.len() / 2 {
            self.compact();
        }
        true
    }

    /// Rewrites the arena with the live records only.
    fn compact(&mut self) {
        let mut fresh = Bucket::default();
        for &(_, at) in &self.slots {
            let (db, key) = self.record(at);
            fresh.push(db, key);
        }
        *self = fresh;
    }

    /// Gives back what growth reserved beyond the keys held: a bucket fills while the
    /// clock is `ttl` before its deadline and, for one ttl, no more after.
    fn shrink(&mut self) {
        self.slots.shrink_to_fit();
        self.arena.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    /// Takes up to `n` keys out.
    fn drain(&mut self, n: usize) -> Vec<(Db, Box<[u8]>)> {
        let from = self.slots.len() - n;
        let taken: Vec<_> = self.slots[from..].iter().map(|&(_, at)| self.record(at)).map(|(db, key)| (db, key.into())).collect();
        self.slots.truncate(from);
        self.garbage += taken.iter().map(|(_, key): &(Db, Box<[u8]>)| RECORD_HEAD + key.len()).sum::<usize>();
        if self.slots.is_empty() {
            *self = Bucket::default();
        }
        taken
    }

    /// Keeps the keys `keep` says yes to, with their database mapped by `db_of`.
    fn rewrite(&mut self, keep: impl Fn(Db) -> bool, db_of: impl Fn(Db) -> Db) {
        let mut fresh = Bucket::default();
        for &(_, at) in &self.slots {
            let (db, key) = self.record(at);
            if keep(db) {
                fresh.push(db_of(db), key);
            }
        }
        *self = fresh;
    }
}

/// Keys grouped by deadline millisecond.
#[derive(Debug, Default)]
pub struct Deadlines {
    buckets: BTreeMap<Millis, Bucket>,
    len: usize,
    /// The bucket the last insert went to: when inserts move on to another one, this one
    /// is likely full and is shrunk.
    filling: Option<Millis>,
}

impl Deadlines {
    /// Adds an entry, in O(1): inserting runs on every grant, so it does not look for a
    /// twin. The rare duplicate (a key re-checked after loading or renaming) is harmless:
    /// each `remove` takes one copy, and a copy left over only makes the timer look at
    /// the key once more at that deadline.
    pub fn insert(&mut self, deadline: Millis, db: Db, key: &[u8]) {
        if let Some(previous) = self.filling.filter(|d| *d != deadline) {
            if let Some(bucket) = self.buckets.get_mut(&previous) {
                bucket.shrink();
            }
        }
        self.filling = Some(deadline);
        self.buckets.entry(deadline).or_default().push(db, key);
        self.len += 1;
    }

    pub fn remove(&mut self, deadline: Millis, db: Db, key: &[u8]) {
        let Some(bucket) = self.buckets.get_mut(&deadline) else { return };
        if !bucket.remove(db, key) {
            return;
        }
        self.len -= 1;
        if bucket.len() == 0 {
            self.buckets.remove(&deadline);
        }
    }

    /// Moves a key's entry from `old` to `new`, either of which may be absent. A deadline
    /// that only grows (a re-entry, an extend) keeps its entry: it falls due early, and the
    /// glue, which checks the key of every due entry, tracks the real deadline then. A
    /// lease renewed again and again so costs no index work until its first deadline.
    /// Returns whether the index changed.
    pub fn replace(&mut self, db: Db, key: &[u8], old: Option<Millis>, new: Option<Millis>) -> bool {
        if old == new || matches!((old, new), (Some(old), Some(new)) if new > old) {
            return false;
        }
        if let Some(d) = old {
            self.remove(d, db, key);
        }
        if let Some(d) = new {
            self.insert(d, db, key);
        }
        true
    }

    pub fn earliest(&self) -> Option<Millis> {
        self.buckets.first_key_value().map(|(d, _)| *d)
    }

    /// Removes and returns up to `limit` keys whose deadline is at or before `now`,
    /// earliest deadline first.
    pub fn take_due(&mut self, now: Millis, limit: usize) -> Vec<(Db, Box<[u8]>)> {
        let mut due = Vec::new();
        while due.len() < limit {
            let Some(mut first) = self.buckets.first_entry() else { break };
            if *first.key() > now {
                break;
            }
            let bucket = first.get_mut();
            let take = bucket.len().min(limit - due.len());
            due.extend(bucket.drain(take));
            if bucket.len() == 0 {
                first.remove();
            }
        }
        self.len -= due.len();
        due
    }

    /// Forgets every entry of `db`, or of every database when `db` is `None`.
    pub fn clear(&mut self, db: Option<Db>) {
        let Some(db) = db else {
            *self = Deadlines::default();
            return;
        };
        for bucket in self.buckets.values_mut() {
            bucket.rewrite(|d| d != db, |d| d);
        }
        self.buckets.retain(|_, bucket| bucket.len() > 0);
        self.len = self.buckets.values().map(Bucket::len).sum();
    }

    /// Follows `SWAPDB a b`.
    pub fn swap_dbs(&mut self, a: Db, b: Db) {
        for bucket in self.buckets.values_mut() {
            bucket.rewrite(|_| true, |d| if d == a { b } else if d == b { a } else { d });
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_entries_come_out_in_deadline_order_and_only_when_due() {
        let mut d = Deadlines::default();
        d.insert(30, 0, b"c");
        d.insert(10, 0, b"a");
        d.insert(20, 1, b"b");
        assert_eq!(d.earliest(), Some(10));
        assert!(d.take_due(9, 10).is_empty());
        let due = d.take_due(20, 10);
        assert_eq!(due, vec![(0, b"a"[..].into()), (1, b"b"[..].into())]);
        assert_eq!(d.earliest(), Some(30));
    }

    #[test]
    fn take_due_stops_at_its_limit_and_leaves_the_rest_due() {
        let mut d = Deadlines::default();
        for (i, key) in [b"a", b"b", b"c"].iter().enumerate() {
            d.insert(i as Millis, 0, *key);
        }
        assert_eq!(d.take_due(5, 2).len(), 2);
        assert_eq!(d.earliest(), Some(2));
        assert_eq!(d.take_due(5, 2), vec![(0, b"c"[..].into())]);
    }

    #[test]
    fn replace_moves_an_entry_earlier_or_out_and_removing_a_missing_one_is_harmless() {
        let mut d = Deadlines::default();
        d.replace(0, b"k", None, Some(50));
        d.replace(0, b"k", Some(50), Some(10));
        assert_eq!(d.len(), 1);
        assert_eq!(d.earliest(), Some(10));
        d.replace(0, b"k", Some(10), None);
        d.remove(10, 0, b"k");
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn a_deadline_that_grows_keeps_its_entry_until_it_falls_due() {
        let mut d = Deadlines::default();
        d.replace(0, b"k", None, Some(10));
        d.replace(0, b"k", Some(10), Some(50));
        d.replace(0, b"k", Some(50), Some(90));
        assert_eq!((d.len(), d.earliest()), (1, Some(10)), "no index work while the lease grows");
        assert_eq!(d.take_due(10, 10), vec![(0, b"k"[..].into())], "due at the first deadline, for a re-check");
        assert!(d.is_empty());
    }

    #[test]
    fn keys_sharing_a_deadline_come_out_together_and_leave_one_by_one() {
        let mut d = Deadlines::default();
        for key in [b"a", b"b", b"c"] {
            d.insert(10, 0, key);
        }
        d.insert(10, 0, b"b");
        assert_eq!(d.len(), 4, "a twin is kept");
        d.remove(10, 0, b"b");
        d.remove(10, 0, b"b");
        d.remove(10, 1, b"a");
        assert_eq!(d.len(), 2, "only the exact entries go, one per remove");
        let mut due = d.take_due(10, 10);
        due.sort();
        assert_eq!(due, vec![(0, b"a"[..].into()), (0, b"c"[..].into())]);
        assert!(d.is_empty());
        assert_eq!(d.earliest(), None);
    }

    #[test]
    fn clear_and_swap_follow_flushdb_flushall_and_swapdb() {
        let mut d = Deadlines::default();
        d.insert(10, 0, b"a");
        d.insert(20, 1, b"b");
        d.insert(30, 2, b"c");
        d.swap_dbs(0, 1);
        assert_eq!(d.take_due(10, 10), vec![(1, b"a"[..].into())]);
        d.clear(Some(0));
        assert_eq!(d.len(), 1);
        d.clear(None);
        assert_eq!(d.len(), 0);
    }

    /// Many keys in one millisecond, removed in any order (compacting the arena on the
    /// way), then the rest taken when due: exactly the keys still in, each once.
    #[test]
    fn a_packed_bucket_keeps_exactly_its_live_keys_through_removals_and_compaction() {
        let mut d = Deadlines::default();
        let key = |i: u32| format!("lock:{i}:{}", "x".repeat((i % 7) as usize)).into_bytes();
        for i in 0..1_000u32 {
            d.insert(10, (i % 3) as Db, &key(i));
        }
        for i in (0..1_000u32).filter(|i| i % 4 != 0) {
            d.remove(10, (i % 3) as Db, &key(i));
        }
        d.remove(10, 5, &key(0));
        assert_eq!(d.len(), 250);
        let mut due = d.take_due(10, usize::MAX);
        due.sort();
        let mut want: Vec<(Db, Box<[u8]>)> = (0..1_000u32).filter(|i| i % 4 == 0).map(|i| ((i % 3) as Db, key(i).into())).collect();
        want.sort();
        assert_eq!(due, want);
        assert!(d.is_empty() && d.earliest().is_none());
    }
}
