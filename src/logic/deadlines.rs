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

/// One key in a bucket: its database, a hash of its name (compared first, so scanning
/// a bucket of hundreds of keys costs hundreds of integer compares), and the name.
type Entry = (Db, u32, Box<[u8]>);

/// Keys grouped by deadline millisecond. Grouping costs one vector slot per key (plus
/// the key name) instead of one B-tree slot; under load hundreds of leases share a
/// millisecond, which keeps the index to about 40 bytes per held lock.
#[derive(Debug, Default)]
pub struct Deadlines {
    buckets: BTreeMap<Millis, Vec<Entry>>,
    len: usize,
}

/// FNV-1a: cheap, and only used to skip non-matching keys in a bucket.
fn name_hash(key: &[u8]) -> u32 {
    key.iter().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

fn matches(entry: &Entry, db: Db, hash: u32, key: &[u8]) -> bool {
    entry.0 == db && entry.1 == hash && *entry.2 == *key
}

impl Deadlines {
    /// Adds an entry, in O(1): inserting runs on every grant, so it does not look for a
    /// twin. The rare duplicate (a key re-checked after loading or renaming) is harmless:
    /// each `remove` takes one copy, and a copy left over only makes the timer look at
    /// the key once more at that deadline.
    pub fn insert(&mut self, deadline: Millis, db: Db, key: &[u8]) {
        self.buckets.entry(deadline).or_default().push((db, name_hash(key), key.into()));
        self.len += 1;
    }

    pub fn remove(&mut self, deadline: Millis, db: Db, key: &[u8]) {
        let Some(bucket) = self.buckets.get_mut(&deadline) else { return };
        let hash = name_hash(key);
        let Some(i) = bucket.iter().position(|e| matches(e, db, hash, key)) else { return };
        bucket.swap_remove(i);
        self.len -= 1;
        if bucket.is_empty() {
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
            due.extend(bucket.drain(bucket.len() - take..).map(|(db, _, key)| (db, key)));
            if bucket.is_empty() {
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
            bucket.retain(|(d, _, _)| *d != db);
        }
        self.buckets.retain(|_, bucket| !bucket.is_empty());
        self.len = self.buckets.values().map(Vec::len).sum();
    }

    /// Follows `SWAPDB a b`.
    pub fn swap_dbs(&mut self, a: Db, b: Db) {
        for (db, _, _) in self.buckets.values_mut().flatten() {
            *db = if *db == a { b } else if *db == b { a } else { *db };
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
}
