//! The expiry index: which key's lease ends next.
//!
//! One ordered set for the whole server, so the module needs a single timer armed for
//! the earliest deadline, and finding it never scans the locks. Entries name a key by
//! database and name; the glue re-checks the key when an entry falls due, so an entry
//! left behind by a key that was deleted or renamed does no harm beyond its bytes, and
//! the glue removes those too when Redis tells it the key went away.

use std::collections::BTreeSet;

use super::Millis;

pub type Db = i32;

#[derive(Debug, Default)]
pub struct Deadlines {
    entries: BTreeSet<(Millis, Db, Box<[u8]>)>,
}

impl Deadlines {
    pub fn insert(&mut self, deadline: Millis, db: Db, key: &[u8]) {
        self.entries.insert((deadline, db, key.into()));
    }

    pub fn remove(&mut self, deadline: Millis, db: Db, key: &[u8]) {
        self.entries.remove(&(deadline, db, key.into()));
    }

    /// Moves a key's entry from `old` to `new`, either of which may be absent.
    pub fn replace(&mut self, db: Db, key: &[u8], old: Option<Millis>, new: Option<Millis>) {
        if old == new {
            return;
        }
        if let Some(d) = old {
            self.remove(d, db, key);
        }
        if let Some(d) = new {
            self.insert(d, db, key);
        }
    }

    pub fn earliest(&self) -> Option<Millis> {
        self.entries.first().map(|(d, _, _)| *d)
    }

    /// Removes and returns up to `limit` keys whose deadline is at or before `now`,
    /// earliest first.
    pub fn take_due(&mut self, now: Millis, limit: usize) -> Vec<(Db, Box<[u8]>)> {
        let mut due = Vec::new();
        while due.len() < limit && self.entries.first().is_some_and(|(d, _, _)| *d <= now) {
            let (_, db, key) = self.entries.pop_first().expect("checked non-empty");
            due.push((db, key));
        }
        due
    }

    /// Forgets every entry of `db`, or of every database when `db` is `None`.
    pub fn clear(&mut self, db: Option<Db>) {
        match db {
            None => self.entries.clear(),
            Some(db) => self.entries.retain(|(_, d, _)| *d != db),
        }
    }

    /// Follows `SWAPDB a b`.
    pub fn swap_dbs(&mut self, a: Db, b: Db) {
        let swapped = std::mem::take(&mut self.entries)
            .into_iter()
            .map(|(t, db, key)| (t, if db == a { b } else if db == b { a } else { db }, key))
            .collect();
        self.entries = swapped;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
    fn replace_moves_an_entry_and_removing_a_missing_one_is_harmless() {
        let mut d = Deadlines::default();
        d.replace(0, b"k", None, Some(10));
        d.replace(0, b"k", Some(10), Some(50));
        assert_eq!(d.len(), 1);
        assert_eq!(d.earliest(), Some(50));
        d.replace(0, b"k", Some(50), None);
        d.remove(50, 0, b"k");
        assert_eq!(d.len(), 0);
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
