//! The read-write lock: many readers or one writer, each holder with its own lease,
//! token and reentrant hold count.
//!
//! A holder is an (owner, mode) pair, so one owner may hold both modes: that is how a
//! downgrade looks (the writer takes the read lock at once) and how an upgrade looks
//! (the sole reader takes the write lock). Holds are kept by key and by deadline, so the
//! next lease to end is found without scanning thousands of readers.
//!
//! The queue of waiters lives outside (see `waiters`); operations take `others_first`,
//! which says whether somebody queued earlier must be served before this caller. That
//! gives arrival order with writer preference: a waiting writer sits in the queue, so
//! every later reader is told "others first" and waits behind it.
//!
//! Every change is recorded so the glue can propagate exactly the holds that changed
//! (`take_changes`), which keeps replication O(1) per operation however many readers
//! hold the lock.

use std::collections::{BTreeMap, BTreeSet};

use super::tokens::{TokenClock, TokensExhausted};
use super::{Millis, Token};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    Write,
    Read,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Write => "write",
            Mode::Read => "read",
        }
    }

    pub fn parse(name: &[u8]) -> Option<Mode> {
        match name {
            b"write" => Some(Mode::Write),
            b"read" => Some(Mode::Read),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub token: Token,
    /// Absolute, on the master's wall clock.
    pub deadline: Millis,
    pub holds: u64,
}

impl Hold {
    pub fn ttl_left(&self, now: Millis) -> Millis {
        (self.deadline - now).max(0)
    }
}

/// Names one holder: the mode first, so the writer (if any) sorts before all readers.
pub type HolderKey = (Mode, Vec<u8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquire {
    Granted(Token),
    Reentered(Token),
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    NotHeld,
    StillHeld,
    /// This holder's last hold is gone.
    Dropped,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RwLock {
    holds: BTreeMap<HolderKey, Hold>,
    by_deadline: BTreeSet<(Millis, Mode, Vec<u8>)>,
    changes: Vec<HolderKey>,
}

impl RwLock {
    /// Sets one hold exactly (loading, replication), or removes it with `None`.
    pub fn set(&mut self, mode: Mode, owner: &[u8], hold: Option<Hold>) {
        let key = (mode, owner.to_vec());
        if let Some(old) = self.holds.remove(&key) {
            self.by_deadline.remove(&(old.deadline, mode, owner.to_vec()));
        }
        if let Some(hold) = hold {
            self.by_deadline.insert((hold.deadline, mode, owner.to_vec()));
            self.holds.insert(key.clone(), hold);
        }
        self.changes.push(key);
    }

    /// The holds that changed since the last call, each once.
    pub fn take_changes(&mut self) -> Vec<HolderKey> {
        let mut changes = std::mem::take(&mut self.changes);
        changes.sort_unstable();
        changes.dedup();
        changes
    }

    pub fn get(&self, mode: Mode, owner: &[u8]) -> Option<&Hold> {
        self.holds.get(&(mode, owner.to_vec()))
    }

    /// Every stored hold, the writer first, whether or not its lease is over.
    pub fn stored(&self) -> impl Iterator<Item = (&HolderKey, &Hold)> {
        self.holds.iter()
    }

    /// The holds whose lease is not over at `now`.
    pub fn live(&self, now: Millis) -> impl Iterator<Item = (&HolderKey, &Hold)> {
        self.holds.iter().filter(move |(_, h)| now < h.deadline)
    }

    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    pub fn len(&self) -> usize {
        self.holds.len()
    }

    /// `write`, `read` or `none`, counting live holds only.
    pub fn mode(&self, now: Millis) -> Option<Mode> {
        self.live(now).map(|((mode, _), _)| *mode).next()
    }

    /// The deadline of the lease that ends first.
    pub fn earliest_deadline(&self) -> Option<Millis> {
        self.by_deadline.first().map(|(d, _, _)| *d)
    }

    /// Ends every hold whose lease is over. True when any ended.
    pub fn end_over(&mut self, now: Millis) -> bool {
        let mut ended = false;
        while let Some((deadline, mode, owner)) = self.by_deadline.first().cloned() {
            if deadline > now {
                break;
            }
            self.set(mode, &owner, None);
            ended = true;
        }
        ended
    }

    /// The exclusion invariant: at most one writer, and no reader but the writer itself.
    /// Holds set one by one (loading) are checked with it.
    pub fn exclusive(&self) -> bool {
        let writers = self.holds.keys().filter(|(m, _)| *m == Mode::Write).count();
        match self.writer() {
            None => writers == 0,
            Some(w) => writers == 1 && self.readers_only(w),
        }
    }

    fn writer(&self) -> Option<&[u8]> {
        self.holds.keys().next().filter(|(m, _)| *m == Mode::Write).map(|(_, o)| o.as_slice())
    }

    /// True when the only readers (if any) are `owner`.
    fn readers_only(&self, owner: &[u8]) -> bool {
        self.holds.keys().filter(|(m, _)| *m == Mode::Read).all(|(_, o)| o == owner)
    }

    fn grant(&mut self, mode: Mode, owner: &[u8], ttl: Millis, now: Millis, clock: &mut TokenClock) -> Result<Acquire, TokensExhausted> {
        let token = clock.issue(now, 0)?;
        self.set(mode, owner, Some(Hold { token, deadline: now + ttl, holds: 1 }));
        Ok(Acquire::Granted(token))
    }

    pub fn acquire(
        &mut self,
        mode: Mode,
        owner: &[u8],
        ttl: Millis,
        now: Millis,
        clock: &mut TokenClock,
        others_first: bool,
    ) -> Result<Acquire, TokensExhausted> {
        self.end_over(now);
        if let Some(held) = self.get(mode, owner).copied() {
            // Reentry is granted whoever waits: refusing it would deadlock the holder.
            let hold = Hold { holds: super::one_more(held.holds), deadline: now + ttl, ..held };
            self.set(mode, owner, Some(hold));
            return Ok(Acquire::Reentered(held.token));
        }
        let writer = self.writer().map(<[u8]>::to_vec);
        match mode {
            // Downgrade: the writer reads at once.
            Mode::Read if writer.as_deref() == Some(owner) => self.grant(mode, owner, ttl, now, clock),
            Mode::Read if writer.is_some() || others_first => Ok(Acquire::Busy),
            Mode::Read => self.grant(mode, owner, ttl, now, clock),
            Mode::Write if writer.is_some() || !self.readers_only(owner) => Ok(Acquire::Busy),
            // Upgrade: the sole reader writes at once.
            Mode::Write if self.get(Mode::Read, owner).is_some() => self.grant(mode, owner, ttl, now, clock),
            Mode::Write if others_first => Ok(Acquire::Busy),
            Mode::Write => self.grant(mode, owner, ttl, now, clock),
        }
    }

    pub fn release(&mut self, mode: Mode, owner: &[u8], now: Millis) -> Release {
        self.end_over(now);
        match self.get(mode, owner).copied() {
            None => Release::NotHeld,
            Some(h) if h.holds > 1 => {
                self.set(mode, owner, Some(Hold { holds: h.holds - 1, ..h }));
                Release::StillHeld
            }
            Some(_) => {
                self.set(mode, owner, None);
                Release::Dropped
            }
        }
    }

    /// Gives every hold of `owner` the lease `now + ttl`. False when it holds nothing.
    pub fn extend(&mut self, owner: &[u8], ttl: Millis, now: Millis) -> bool {
        self.end_over(now);
        let mut any = false;
        for mode in [Mode::Write, Mode::Read] {
            if let Some(h) = self.get(mode, owner).copied() {
                self.set(mode, owner, Some(Hold { deadline: now + ttl, ..h }));
                any = true;
            }
        }
        any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Millis = 1_790_000_000_000;

    fn tok(r: Result<Acquire, TokensExhausted>) -> Token {
        match r.unwrap() {
            Acquire::Granted(t) | Acquire::Reentered(t) => t,
            Acquire::Busy => panic!("expected a grant"),
        }
    }

    #[test]
    fn readers_share_and_each_has_its_own_token_and_lease() {
        let (mut l, mut c) = (RwLock::default(), TokenClock::default());
        let a = tok(l.acquire(Mode::Read, b"a", 100, T0, &mut c, false));
        let b = tok(l.acquire(Mode::Read, b"b", 300, T0, &mut c, false));
        assert!(b > a);
        assert_eq!(l.mode(T0), Some(Mode::Read));
        assert_eq!(l.earliest_deadline(), Some(T0 + 100));
        // a's lease ends; b is untouched.
        assert!(l.end_over(T0 + 100));
        assert!(l.get(Mode::Read, b"a").is_none());
        assert_eq!(l.get(Mode::Read, b"b").unwrap().token, b);
    }

    #[test]
    fn a_writer_holds_alone() {
        let (mut l, mut c) = (RwLock::default(), TokenClock::default());
        tok(l.acquire(Mode::Write, b"w", 100, T0, &mut c, false));
        assert_eq!(l.acquire(Mode::Read, b"r", 100, T0, &mut c, false), Ok(Acquire::Busy));
        assert_eq!(l.acquire(Mode::Write, b"x", 100, T0, &mut c, false), Ok(Acquire::Busy));
        l.release(Mode::Write, b"w", T0);
        tok(l.acquire(Mode::Read, b"r", 100, T0, &mut c, false));
        assert_eq!(l.acquire(Mode::Write, b"x", 100, T0, &mut c, false), Ok(Acquire::Busy));
    }

    #[test]
    fn a_waiting_writer_stops_new_readers_but_not_reentry() {
        let (mut l, mut c) = (RwLock::default(), TokenClock::default());
        let t = tok(l.acquire(Mode::Read, b"r1", 100, T0, &mut c, false));
        // A writer waits (others_first is what the glue says once it is queued).
        assert_eq!(l.acquire(Mode::Read, b"r2", 100, T0, &mut c, true), Ok(Acquire::Busy));
        assert_eq!(l.acquire(Mode::Read, b"r1", 100, T0, &mut c, true), Ok(Acquire::Reentered(t)));
        assert_eq!(l.get(Mode::Read, b"r1").unwrap().holds, 2);
    }

    #[test]
    fn downgrade_is_immediate_and_upgrade_needs_to_be_the_sole_reader() {
        let (mut l, mut c) = (RwLock::default(), TokenClock::default());
        let w = tok(l.acquire(Mode::Write, b"a", 100, T0, &mut c, false));
        let r = tok(l.acquire(Mode::Read, b"a", 100, T0, &mut c, true));
        assert!(r > w);
        assert_eq!(l.release(Mode::Write, b"a", T0), Release::Dropped);
        assert_eq!(l.mode(T0), Some(Mode::Read));

        // Sole reader: upgrade at once, even with others queued.
        let u = tok(l.acquire(Mode::Write, b"a", 100, T0, &mut c, true));
        assert!(u > r);
        l.release(Mode::Write, b"a", T0);
        // Another reader: the upgrade waits.
        tok(l.acquire(Mode::Read, b"b", 100, T0, &mut c, false));
        assert_eq!(l.acquire(Mode::Write, b"a", 100, T0, &mut c, false), Ok(Acquire::Busy));
    }

    #[test]
    fn extend_resets_every_hold_of_the_owner() {
        let (mut l, mut c) = (RwLock::default(), TokenClock::default());
        tok(l.acquire(Mode::Write, b"a", 100, T0, &mut c, false));
        tok(l.acquire(Mode::Read, b"a", 50, T0, &mut c, false));
        assert!(l.extend(b"a", 1000, T0 + 10));
        assert_eq!(l.get(Mode::Write, b"a").unwrap().deadline, T0 + 1010);
        assert_eq!(l.get(Mode::Read, b"a").unwrap().deadline, T0 + 1010);
        assert_eq!(l.earliest_deadline(), Some(T0 + 1010));
        assert!(!l.extend(b"zz", 1000, T0));
    }

    #[test]
    fn changes_name_each_touched_hold_once() {
        let (mut l, mut c) = (RwLock::default(), TokenClock::default());
        tok(l.acquire(Mode::Read, b"a", 100, T0, &mut c, false));
        tok(l.acquire(Mode::Read, b"a", 100, T0, &mut c, false));
        tok(l.acquire(Mode::Read, b"b", 100, T0, &mut c, false));
        assert_eq!(l.take_changes(), vec![(Mode::Read, b"a".to_vec()), (Mode::Read, b"b".to_vec())]);
        assert!(l.take_changes().is_empty());
    }

    #[test]
    fn thousands_of_readers_end_by_deadline_order() {
        let (mut l, mut c) = (RwLock::default(), TokenClock::default());
        for i in 0..5000 {
            tok(l.acquire(Mode::Read, format!("r{i}").as_bytes(), 1 + (i % 100), T0, &mut c, false));
        }
        assert_eq!(l.earliest_deadline(), Some(T0 + 1));
        l.end_over(T0 + 50);
        assert_eq!(l.len(), 5000 - 50 * 50);
        assert_eq!(l.earliest_deadline(), Some(T0 + 51));
    }
}

/// A model-based test: random operations and clock steps against the state machine
/// plus a FIFO queue served the way the glue serves it, checked against a reference
/// model and the lock's invariants after every step.
#[cfg(test)]
mod model {
    use std::collections::{HashMap, VecDeque};

    use proptest::prelude::*;

    use super::*;

    const T0: Millis = 1_790_000_000_000;
    const OWNERS: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];

    #[derive(Debug, Clone)]
    enum Op {
        Acquire { owner: usize, mode: Mode, ttl: Millis, wait: bool },
        Release { owner: usize, mode: Mode },
        Extend { owner: usize, ttl: Millis },
        Advance(Millis),
        /// A queued waiter times out or disconnects.
        Leave(usize),
    }

    fn mode() -> impl Strategy<Value = Mode> {
        prop_oneof![Just(Mode::Read), Just(Mode::Write)]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4usize, mode(), 1..60i64, any::<bool>())
                .prop_map(|(owner, mode, ttl, wait)| Op::Acquire { owner, mode, ttl, wait }),
            3 => (0..4usize, mode()).prop_map(|(owner, mode)| Op::Release { owner, mode }),
            1 => (0..4usize, 1..60i64).prop_map(|(owner, ttl)| Op::Extend { owner, ttl }),
            2 => (0..40i64).prop_map(Op::Advance),
            1 => (0..8usize).prop_map(Op::Leave),
        ]
    }

    struct Sim {
        lock: RwLock,
        clock: TokenClock,
        now: Millis,
        queue: VecDeque<(usize, Mode, Millis)>,
        /// The reference: (mode, owner) -> (token, holds, deadline).
        model: HashMap<(Mode, usize), (Token, u64, Millis)>,
        last_fresh: Token,
    }

    impl Sim {
        fn expire_model(&mut self) {
            let now = self.now;
            self.model.retain(|_, (_, _, deadline)| now < *deadline);
        }

        fn record(&mut self, owner: usize, mode: Mode, ttl: Millis, outcome: Acquire) {
            match outcome {
                Acquire::Granted(t) => {
                    assert!(t > self.last_fresh, "token {t} not above {}", self.last_fresh);
                    self.last_fresh = t;
                    assert!(self.model.insert((mode, owner), (t, 1, self.now + ttl)).is_none());
                }
                Acquire::Reentered(t) => {
                    let hold = self.model.get_mut(&(mode, owner)).expect("reentry of a live hold");
                    assert_eq!(hold.0, t, "reentry returns the held token");
                    hold.1 += 1;
                    hold.2 = self.now + ttl;
                }
                Acquire::Busy => {}
            }
        }

        /// Grants from the front while the front can be granted, as the glue does when
        /// Redis retries blocked clients in order.
        fn serve(&mut self) {
            while let Some(&(owner, mode, ttl)) = self.queue.front() {
                let r = self.lock.acquire(mode, OWNERS[owner], ttl, self.now, &mut self.clock, false).unwrap();
                self.expire_model();
                if r == Acquire::Busy {
                    break;
                }
                self.queue.pop_front();
                self.record(owner, mode, ttl, r);
            }
        }

        fn step(&mut self, op: Op) {
            match op {
                Op::Acquire { owner, mode, ttl, wait } => {
                    let others_first = !self.queue.is_empty();
                    let writer_before = self.lock.live(self.now).find(|((m, _), _)| *m == Mode::Write).map(|((_, o), _)| o.clone());
                    let read_before = self.lock.get(Mode::Read, OWNERS[owner]).is_some_and(|h| self.now < h.deadline);
                    let r = self.lock.acquire(mode, OWNERS[owner], ttl, self.now, &mut self.clock, others_first).unwrap();
                    self.expire_model();
                    if others_first && matches!(r, Acquire::Granted(_)) {
                        // Jumping the queue is only for a downgrade or a sole reader's upgrade.
                        let downgrade = mode == Mode::Read && writer_before.as_deref() == Some(OWNERS[owner]);
                        let upgrade = mode == Mode::Write && read_before;
                        assert!(downgrade || upgrade, "{mode:?} by {owner} jumped the queue {:?}", self.queue);
                    }
                    self.record(owner, mode, ttl, r);
                    if r == Acquire::Busy && wait {
                        self.queue.push_back((owner, mode, ttl));
                    }
                }
                Op::Release { owner, mode } => {
                    let r = self.lock.release(mode, OWNERS[owner], self.now);
                    self.expire_model();
                    match (r, self.model.get_mut(&(mode, owner))) {
                        (Release::NotHeld, None) => {}
                        (Release::StillHeld, Some(h)) if h.1 > 1 => h.1 -= 1,
                        (Release::Dropped, Some(h)) if h.1 == 1 => {
                            self.model.remove(&(mode, owner));
                        }
                        (r, h) => panic!("release {r:?} against model {h:?}"),
                    }
                }
                Op::Extend { owner, ttl } => {
                    let r = self.lock.extend(OWNERS[owner], ttl, self.now);
                    self.expire_model();
                    let mut any = false;
                    for mode in [Mode::Read, Mode::Write] {
                        if let Some(h) = self.model.get_mut(&(mode, owner)) {
                            h.2 = self.now + ttl;
                            any = true;
                        }
                    }
                    assert_eq!(r, any);
                }
                Op::Advance(ms) => {
                    self.now += ms;
                    self.lock.end_over(self.now);
                    self.expire_model();
                }
                Op::Leave(i) => {
                    if i < self.queue.len() {
                        self.queue.remove(i);
                    }
                }
            }
            self.serve();
            self.check();
        }

        fn check(&self) {
            let live: Vec<_> = self.lock.live(self.now).collect();
            let writers: Vec<_> = live.iter().filter(|((m, _), _)| *m == Mode::Write).collect();
            assert!(writers.len() <= 1, "two writers: {live:?}");
            if let Some(((_, w), _)) = writers.first() {
                assert!(live.iter().all(|((_, o), _)| o == w), "a writer with other holders: {live:?}");
            }
            assert!(self.lock.exclusive(), "exclusive() disagrees: {live:?}");
            // The lock agrees with the model on every live hold.
            assert_eq!(live.len(), self.model.len(), "{live:?} vs {:?}", self.model);
            for ((mode, owner), (token, holds, deadline)) in &self.model {
                let h = self.lock.get(*mode, OWNERS[*owner]).expect("held in the model");
                assert_eq!((h.token, h.holds, h.deadline), (*token, *holds, *deadline));
            }
            // Nobody waits on a lock nobody holds: the front would have been served.
            if !self.queue.is_empty() {
                assert!(!live.is_empty(), "waiters {:?} on a free lock", self.queue);
            }
            // The next lease to end is the earliest one.
            let earliest = self.lock.stored().map(|(_, h)| h.deadline).min();
            assert_eq!(self.lock.earliest_deadline(), earliest);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn random_histories_keep_the_invariants(ops in proptest::collection::vec(op(), 1..80)) {
            let mut sim = Sim {
                lock: RwLock::default(),
                clock: TokenClock::default(),
                now: T0,
                queue: VecDeque::new(),
                model: HashMap::new(),
                last_fresh: 0,
            };
            for op in ops {
                sim.step(op);
            }
        }
    }
}
