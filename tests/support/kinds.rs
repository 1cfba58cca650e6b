//! Every lock kind behind one trait (mounted by `durability.rs` and `replication.rs` with
//! `#[path = "support/kinds.rs"] mod kinds;`), so that the tests organised by concern
//! (`durability.rs`, `replication.rs`) run each concern for every kind: they build the
//! state of every kind in [`KINDS`] on one server, reload, restart, sync or promote it, and
//! compare and probe each kind through [`LockKind`].
//!
//! Each kind (mutex, read-write lock, fence, semaphore) is one `impl LockKind` and one
//! entry in [`KINDS`]: the primitives ([`names`](LockKind::names), [`state`](LockKind::state),
//! [`try_grant`](LockKind::try_grant), [`release`](LockKind::release),
//! [`writes`](LockKind::writes)) are required, [`reenter`](LockKind::reenter) is the
//! exclusive grant again for every kind with holds; every scenario hook (a varied state,
//! the changes after an AOF rewrite or streamed to a replica, the fresh-token and
//! hold-count checks) has a default built from them, which the kinds below override with
//! their own, more detailed scenarios where they have them.

#![allow(dead_code)]

use redis::Value;
use std::collections::BTreeMap;

use crate::support::cmd::*;
use crate::support::locks::*;
use crate::support::server::Server;
use crate::support::waiter::{queue_sem, Waiter};

/// The kinds every concern is tested for.
pub static KINDS: &[&dyn LockKind] = &[&Mutex, &RwLock, &Fence, &Semaphore];

/// The kinds whose grants have leases.
pub fn leased_kinds() -> impl Iterator<Item = &'static dyn LockKind> {
    KINDS.iter().copied().filter(|k| k.has_leases())
}

// ---------------------------------------------------------------------------------------
// The state of a key, as its INFO command reports it
// ---------------------------------------------------------------------------------------

/// (owner, mode) -> (token, holds, ttl) of every holder of a key.
pub type HolderMap = BTreeMap<(Vec<u8>, String), (i64, i64, i64)>;

#[derive(Debug, Clone, PartialEq)]
pub enum KeyState {
    /// A lock: its holders (mode `""` for a mutex) and how many clients wait.
    Held { holders: HolderMap, waiters: i64 },
    /// A fence: its highest token.
    Fence(i64),
}

impl KeyState {
    /// The holders, empty for a fence.
    pub fn holders(&self) -> HolderMap {
        match self {
            KeyState::Held { holders, .. } => holders.clone(),
            KeyState::Fence(_) => HolderMap::new(),
        }
    }

    /// The token of `owner`'s hold (any mode), or a fence's highest.
    pub fn token_of(&self, owner: &str) -> Option<i64> {
        match self {
            KeyState::Held { holders, .. } => {
                holders.iter().find(|((o, _), _)| o == owner.as_bytes()).map(|(_, (t, _, _))| *t)
            }
            KeyState::Fence(t) => Some(*t),
        }
    }

    /// The hold count of `owner`'s hold (any mode).
    pub fn holds_of(&self, owner: &str) -> Option<i64> {
        self.holders().iter().find(|((o, _), _)| o == owner.as_bytes()).map(|(_, (_, h, _))| *h)
    }
}

/// A short lease started before a reload, checked across it.
#[derive(Debug, Clone)]
pub struct Short {
    pub key: String,
    pub owner: String,
    pub token: i64,
    /// Its ttl as INFO showed it right after the grant.
    pub ttl: i64,
    /// The holders the key keeps once the short lease ended (empty: the key goes).
    pub rest: HolderMap,
    /// `DEBUG DIGEST-VALUE` of the key right after the grant, while the lease surely runs:
    /// the stored value stays so (saving and loading keep it exactly) until the server
    /// ends the lease.
    pub digest: String,
}

// ---------------------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------------------

/// The names of a kind.
pub struct Names {
    /// For messages: `mutex`, `rwlock`, `fence`, `semaphore`.
    pub name: &'static str,
    /// The prefix of the keys its scenarios use (`m`, `rw`, `f`, `s`): every kind has its own.
    pub prefix: &'static str,
    /// What `TYPE` answers for its keys.
    pub type_name: &'static str,
}

pub trait LockKind: Sync {
    /// Its name, its keys' prefix, its type.
    fn names(&self) -> Names;
    fn name(&self) -> &'static str {
        self.names().name
    }
    fn prefix(&self) -> &'static str {
        self.names().prefix
    }
    fn type_name(&self) -> &'static str {
        self.names().type_name
    }
    /// Whether its grants have leases that end (fences: no).
    fn has_leases(&self) -> bool {
        true
    }
    /// Whether its grants are holds that are released (fences: no).
    fn has_holds(&self) -> bool {
        true
    }
    /// The state of `key` as its INFO command reports it; None when free (no key).
    fn state(&self, c: &mut redis::Connection, key: &str) -> Option<KeyState>;
    /// A grant that excludes every other owner (a fence: `FENCE.NEXT`, owner and ttl
    /// unused): its token, None when refused.
    fn try_grant(&self, c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> Option<i64>;
    /// The same owner acquiring its exclusive hold again (one more hold, same token): the
    /// exclusive grant again; None for a kind without holds.
    fn reenter(&self, c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> Option<i64> {
        if self.has_holds() {
            self.try_grant(c, key, owner, ttl)
        } else {
            None
        }
    }
    /// Gives one hold of `owner` back: `Some(1)` or `Some(0)`; None for a kind without holds.
    fn release(&self, c: &mut redis::Connection, key: &str, owner: &str) -> Option<i64>;
    /// Commands that change `key` (held by `owner`) or create `new_key`: a replica
    /// refuses each with READONLY.
    fn writes(&self, key: &str, owner: &str, new_key: &str) -> Vec<Vec<String>>;

    /// A grant that must be given.
    #[track_caller]
    fn grant(&self, c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> i64 {
        self.try_grant(c, key, owner, ttl)
            .unwrap_or_else(|| panic!("{}: a grant of {key} to {owner} was refused", self.name()))
    }

    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.prefix())
    }

    /// `keys` kept their type, and no Redis TTL came on them.
    #[track_caller]
    fn assert_kept(&self, c: &mut redis::Connection, keys: &[&str], what: &str) {
        for k in keys {
            assert_eq!(key_type(c, k), self.type_name(), "{what}: TYPE {k}");
            assert_eq!(pttl(c, k), -1, "{what}: PTTL {k}");
        }
    }

    // -----------------------------------------------------------------------------------
    // Scenario hooks, with defaults built from the primitives
    // -----------------------------------------------------------------------------------

    /// A varied state; returns every token issued.
    fn build(&self, c: &mut redis::Connection) -> Vec<i64> {
        let mut tokens = vec![self.grant(c, &self.key("single"), "alice", LONG_TTL)];
        let t = self.grant(c, &self.key("reentrant"), "bob", LONG_TTL);
        for ttl in [LONG_TTL, 500_000] {
            if let Some(again) = self.reenter(c, &self.key("reentrant"), "bob", ttl) {
                assert_eq!(again, t, "{}: reentry", self.name());
            }
        }
        tokens.push(t);
        tokens.push(self.grant(c, &self.key("released"), "carol", LONG_TTL));
        if let Some(r) = self.release(c, &self.key("released"), "carol") {
            assert_eq!(r, 1, "{}: release", self.name());
        }
        tokens
    }

    /// The keys `build` and `change_after_rewrite` may create, compared across reloads,
    /// restarts and replication.
    fn keys(&self) -> Vec<String> {
        ["single", "reentrant", "released", "after-rewrite"].iter().map(|w| self.key(w)).collect()
    }

    /// After a reload: the types of the held keys, no Redis TTL on them, released keys gone.
    fn assert_neighbours(&self, c: &mut redis::Connection, what: &str) {
        self.assert_kept(c, &[&self.key("single"), &self.key("reentrant")], what);
        if self.has_holds() {
            assert!(!exists(c, &self.key("released")), "{what}: a released lock came back");
        }
    }

    /// Fresh grants are above `max` (every token issued before) and `last` (the last
    /// fresh token of the kinds checked before); returns the last fresh token.
    fn assert_fresh_tokens_larger(&self, c: &mut redis::Connection, max: i64, last: i64, what: &str) -> i64 {
        self.assert_fresh_grants_larger(c, max, last, what)
    }

    /// The default of [`assert_fresh_tokens_larger`](LockKind::assert_fresh_tokens_larger):
    /// grants on the released name and on a new one; returns the second token.
    #[track_caller]
    fn assert_fresh_grants_larger(&self, c: &mut redis::Connection, max: i64, last: i64, what: &str) -> i64 {
        let t = self.grant(c, &self.key("released"), "erin", LONG_TTL);
        assert!(t > max && t > last, "{what}: {} token {t} on a released name not above {max} / {last}", self.name());
        let t2 = self.grant(c, &self.key("brand-new"), "erin", LONG_TTL);
        assert!(t2 > t, "{what}: {} token {t2} on a new name not above {t}", self.name());
        t2
    }

    /// The reentrant holder of `build` still counts down correctly.
    fn assert_holds_count_down(&self, c: &mut redis::Connection, what: &str) {
        let key = self.key("reentrant");
        if !self.has_holds() {
            return;
        }
        for _ in 0..3 {
            assert_eq!(self.release(c, &key, "bob"), Some(1), "{what}: release of {key}");
        }
        assert_eq!(self.release(c, &key, "bob"), Some(0), "{what}: one release of {key} too many");
        assert!(!exists(c, &key), "{what}: {key}");
    }

    /// Changes made after an AOF rewrite (they go to the AOF's tail); adds the tokens.
    fn change_after_rewrite(&self, c: &mut redis::Connection, tokens: &mut Vec<i64>) {
        tokens.push(self.grant(c, &self.key("after-rewrite"), "ivan", LONG_TTL));
    }

    /// A lease of `ttl` ms that ends during the test (None: the kind has no leases).
    fn start_short(&self, c: &mut redis::Connection, ttl: i64) -> Option<Short> {
        if !self.has_leases() {
            return None;
        }
        let key = self.key("soon");
        let token = self.grant(c, &key, "gina", ttl);
        let state = self.state(c, &key).expect("the short lease was just granted");
        let ttl = state.holders().values().next().expect("a holder").2;
        Some(Short { key, owner: "gina".into(), token, ttl, rest: HolderMap::new(), digest: String::new() })
    }

    /// Changes of every sort streamed to `replica`, checked there by the kind; returns
    /// the keys to compare between master and replica afterwards.
    fn stream(
        &self,
        master: &Server,
        replica: &Server,
        m: &mut redis::Connection,
        tokens: &mut Vec<i64>,
    ) -> Vec<String> {
        let mut keys = vec![];
        for i in 0..10 {
            let key = self.key(&format!("s{i}"));
            tokens.push(self.grant(m, &key, "alice", LONG_TTL));
            if i % 2 == 0 {
                self.reenter(m, &key, "alice", 2 * LONG_TTL);
            }
            if i % 3 == 0 {
                self.release(m, &key, "alice");
            }
            keys.push(key);
        }
        await_sync(master, replica);
        keys
    }
}

// ---------------------------------------------------------------------------------------
// Comparing states
// ---------------------------------------------------------------------------------------

/// Every kind's state (by key), with `DBSIZE` and `DEBUG DIGEST`.
#[derive(Debug)]
pub struct Snapshot {
    pub states: BTreeMap<String, Option<KeyState>>,
    pub dbsize: i64,
    pub digest: String,
}

/// The state of every key of every kind, `DBSIZE` and `DEBUG DIGEST`.
pub fn snapshot(c: &mut redis::Connection) -> Snapshot {
    let mut states = BTreeMap::new();
    for kind in KINDS {
        for key in kind.keys() {
            let s = kind.state(c, &key);
            states.insert(key, s);
        }
    }
    Snapshot { states, dbsize: dbsize(c), digest: digest(c) }
}

/// The state after a reload equals the state before: same holders, tokens, hold counts
/// and waiters, every lease shortened by at least the time that passed in between
/// (`passed` ms: deadlines are absolute) but not by much more; same fences, `DBSIZE` and
/// `DEBUG DIGEST`.
#[track_caller]
pub fn assert_same_state(before: &Snapshot, after: &Snapshot, passed: i64, what: &str) {
    for (k, b) in &before.states {
        let a = &after.states[k];
        match (b, a) {
            (None, None) => {}
            (Some(KeyState::Fence(b)), Some(KeyState::Fence(a))) => assert_eq!(a, b, "{what}: highest token of {k}"),
            (Some(KeyState::Held { holders: bh, waiters: bw }), Some(KeyState::Held { holders: ah, waiters: aw })) => {
                let bk: Vec<_> = bh.keys().collect();
                let ak: Vec<_> = ah.keys().collect();
                assert_eq!(ak, bk, "{what}: holders of {k}");
                for (h, (token, holds, ttl)) in bh {
                    let (t2, h2, ttl2) = ah[h];
                    assert_eq!(t2, *token, "{what}: token of {h:?} on {k}");
                    assert_eq!(h2, *holds, "{what}: holds of {h:?} on {k}");
                    assert!(
                        ttl2 <= ttl - passed,
                        "{what}: lease of {h:?} on {k} got longer by being saved: ttl {ttl} before, {ttl2} after {passed} ms"
                    );
                    assert!(ttl2 > 0, "{what}: {k} ttl {ttl2}");
                    assert!(ttl2 > ttl - passed - 20_000, "{what}: lease of {h:?} on {k} shortened: {ttl} then {ttl2}");
                }
                assert_eq!(aw, bw, "{what}: waiters of {k}");
            }
            _ => panic!("{what}: {k} was {b:?}, is {a:?}"),
        }
    }
    assert_eq!(after.dbsize, before.dbsize, "{what}: DBSIZE");
    assert_eq!(after.digest, before.digest, "{what}: DEBUG DIGEST");
}

/// `key` of `kind` on the replica is what it is on the master: the same holders, tokens
/// and holds, a ttl no longer than the master's (plus a little clock slack) and not far
/// shorter, the same type; free on the master means no key on the replica.
#[track_caller]
pub fn assert_replica_same(
    kind: &dyn LockKind,
    m: &mut redis::Connection,
    r: &mut redis::Connection,
    key: &str,
    what: &str,
) {
    let ms = kind.state(m, key);
    let rs = kind.state(r, key);
    match (&ms, &rs) {
        (None, None) => assert!(!exists(r, key), "{what}: {key} free on the master but a key on the replica"),
        (Some(KeyState::Fence(a)), Some(KeyState::Fence(b))) => {
            assert_eq!(b, a, "{what}: highest token of {key} on the replica")
        }
        (Some(KeyState::Held { holders: mh, .. }), Some(KeyState::Held { holders: rh, .. })) => {
            let mk: Vec<_> = mh.keys().collect();
            let rk: Vec<_> = rh.keys().collect();
            assert_eq!(rk, mk, "{what}: holders of {key} on the replica");
            for (h, (token, holds, ttl)) in mh {
                let (t2, h2, ttl2) = rh[h];
                assert_eq!((t2, h2), (*token, *holds), "{what}: token/holds of {h:?} on {key} on the replica");
                assert!(ttl2 > 0 && ttl2 <= ttl + 1_000, "{what}: ttl of {h:?} on {key}: replica {ttl2}, master {ttl}");
                assert!(ttl2 > ttl - 20_000, "{what}: ttl of {h:?} on {key}: replica {ttl2}, master {ttl}");
            }
        }
        _ => panic!("{what}: {key} is {ms:?} on the master, {rs:?} on the replica"),
    }
    if ms.is_some() {
        assert_eq!(key_type(r, key), kind.type_name(), "{what}: TYPE {key} on the replica");
    }
}

/// Each of `keys` of `kind` is the same on the replica as on the master.
#[track_caller]
pub fn assert_replica_same_keys(
    kind: &dyn LockKind,
    m: &mut redis::Connection,
    r: &mut redis::Connection,
    keys: &[String],
    what: &str,
) {
    for key in keys {
        assert_replica_same(kind, m, r, key, what);
    }
}

/// Writes refused on the replica change nothing there: each of `writes` answers
/// READONLY, `new_key` (which one of them would create) stays absent, and once in sync
/// each of `keys` is the same on both.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn assert_refused_writes_change_nothing(
    kind: &dyn LockKind,
    master: &Server,
    replica: &Server,
    m: &mut redis::Connection,
    r: &mut redis::Connection,
    writes: &[&[&str]],
    new_key: &str,
    keys: &[String],
) {
    for args in writes {
        let e = err(r, args);
        assert!(e.starts_with("READONLY"), "{args:?} on a replica answered {e:?}");
    }
    assert!(!exists(r, new_key));
    await_sync(master, replica);
    assert_replica_same_keys(kind, m, r, keys, "after refused writes");
}

/// `freed`, released to free on the master, goes on the replica too, and once in sync
/// each of `keys` is the same on both.
#[track_caller]
pub fn assert_free_reaches_replica(
    kind: &dyn LockKind,
    master: &Server,
    replica: &Server,
    m: &mut redis::Connection,
    r: &mut redis::Connection,
    freed: &str,
    keys: &[String],
) {
    await_sync(master, replica);
    assert!(!exists(r, freed));
    assert_replica_same_keys(kind, m, r, keys, "after releases");
}

/// A fresh token `n` is above every token in `tokens`; then it is one of them.
#[track_caller]
pub fn push_fresh(tokens: &mut Vec<i64>, n: i64) {
    let max = *tokens.iter().max().unwrap();
    assert!(n > max, "token {n} not above {max}");
    tokens.push(n);
}

/// A command's words, owned (for [`LockKind::writes`]).
fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// Every key of every kind is the same on the replica as on the master.
#[track_caller]
pub fn assert_replica_same_all(m: &mut redis::Connection, r: &mut redis::Connection, what: &str) {
    for kind in KINDS {
        for key in kind.keys() {
            assert_replica_same(*kind, m, r, &key, what);
        }
    }
}

/// Every kind's `build`, plus a plain string beside them; every token issued.
pub fn build_all(c: &mut redis::Connection) -> Vec<i64> {
    let mut tokens = vec![];
    for kind in KINDS {
        tokens.extend(kind.build(c));
    }
    ok(c, &["SET", "plain", "v"]);
    tokens
}

/// Every kind's neighbours check, and the plain string.
#[track_caller]
pub fn assert_neighbours_all(c: &mut redis::Connection, what: &str) {
    for kind in KINDS {
        kind.assert_neighbours(c, what);
    }
    assert_eq!(ok(c, &["GET", "plain"]), Value::BulkString(b"v".to_vec()), "{what}");
}

/// Fresh grants of every kind, in turn, are larger than every token before and than
/// each other; then every kind's holds count down. Returns the last fresh token.
#[track_caller]
pub fn assert_fresh_tokens_larger_all(c: &mut redis::Connection, tokens: &[i64], what: &str) -> i64 {
    let max = tokens.iter().copied().max().unwrap_or(0);
    let mut last = max;
    for kind in KINDS {
        last = kind.assert_fresh_tokens_larger(c, max, last, what);
    }
    for kind in KINDS {
        kind.assert_holds_count_down(c, what);
    }
    last
}

/// A short lease of every leased kind.
pub fn start_shorts(c: &mut redis::Connection, ttl: i64) -> Vec<(&'static dyn LockKind, Short)> {
    let mut shorts: Vec<_> = KINDS.iter().filter_map(|k| k.start_short(c, ttl).map(|s| (*k, s))).collect();
    for (_, s) in &mut shorts {
        s.digest = digest_value(c, &s.key);
    }
    shorts
}

/// After a reload: each short lease is still held (when `must_hold`; otherwise it may have
/// ended already) with its token and a ttl at least `passed` ms shorter.
#[track_caller]
pub fn assert_shorts_kept(
    c: &mut redis::Connection,
    shorts: &[(&'static dyn LockKind, Short)],
    passed: i64,
    must_hold: bool,
    what: &str,
) {
    for (kind, s) in shorts {
        let held = kind
            .state(c, &s.key)
            .and_then(|st| st.holders().into_iter().find(|((o, _), _)| o == s.owner.as_bytes()).map(|(_, v)| v));
        match held {
            Some((token, _, ttl)) => {
                assert_eq!(token, s.token, "{what}: token of the short lease on {}", s.key);
                assert!(ttl <= s.ttl - passed, "{what}: short lease on {} got longer: {ttl} vs {}", s.key, s.ttl);
            }
            None => assert!(!must_hold, "{what}: the short lease on {} ended before its time", s.key),
        }
    }
}

/// Each short lease still ends by itself (the stored value changes, with nobody touching
/// the key: `EXISTS` and `DEBUG DIGEST-VALUE` run no command of ours), and the key keeps
/// exactly its other holders.
#[track_caller]
pub fn assert_shorts_end(c: &mut redis::Connection, shorts: &[(&'static dyn LockKind, Short)], what: &str) {
    for (kind, s) in shorts {
        // Compared with the digest taken at the grant, not one read now: the server may
        // end the lease between any two reads here.
        wait_until(PATIENCE, &format!("{what}: the short lease on {} ended", s.key), || {
            !exists(c, &s.key) || digest_value(c, &s.key) != s.digest
        });
        match kind.state(c, &s.key) {
            None => assert!(s.rest.is_empty(), "{what}: {} lost holders {:?}", s.key, s.rest),
            Some(st) => {
                let left: BTreeMap<_, _> = st.holders().into_iter().map(|(k, (t, _, _))| (k, t)).collect();
                let want: BTreeMap<_, _> = s.rest.iter().map(|(k, (t, _, _))| (k.clone(), *t)).collect();
                assert_eq!(left, want, "{what}: holders of {} once the short lease ended", s.key);
            }
        }
        if s.rest.is_empty() {
            assert!(!exists(c, &s.key), "{what}: {} kept its key", s.key);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Mutex
// ---------------------------------------------------------------------------------------

pub struct Mutex;

impl LockKind for Mutex {
    fn names(&self) -> Names {
        Names { name: "mutex", prefix: "m", type_name: "lockmutex" }
    }

    fn state(&self, c: &mut redis::Connection, key: &str) -> Option<KeyState> {
        lock_info(c, key).map(|i| {
            let mut holders = HolderMap::new();
            if let Some(owner) = i.owner {
                holders.insert((owner, String::new()), (i.token, i.holds, i.ttl));
            }
            KeyState::Held { holders, waiters: i.waiters }
        })
    }

    fn try_grant(&self, c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> Option<i64> {
        acquire(c, key, owner, ttl)
    }

    fn release(&self, c: &mut redis::Connection, key: &str, owner: &str) -> Option<i64> {
        Some(release(c, key, owner))
    }

    fn writes(&self, key: &str, owner: &str, new_key: &str) -> Vec<Vec<String>> {
        vec![
            args(&["LOCK.ACQUIRE", key, owner, "1000"]),
            args(&["LOCK.ACQUIRE", new_key, "bob", "1000"]),
            args(&["LOCK.RELEASE", key, owner]),
            args(&["LOCK.EXTEND", key, owner, "1000"]),
        ]
    }

    /// Reentrant holds, a binary owner, the longest lease, a released lock.
    fn build(&self, c: &mut redis::Connection) -> Vec<i64> {
        let mut tokens = vec![];
        tokens.push(grant(c, "m:single", "alice", LONG_TTL));
        let t = grant(c, "m:reentrant", "bob", LONG_TTL);
        assert_eq!(acquire(c, "m:reentrant", "bob", LONG_TTL), Some(t));
        assert_eq!(acquire(c, "m:reentrant", "bob", 500_000), Some(t));
        assert_eq!(held(c, "m:reentrant").token, t);
        tokens.push(t);
        tokens.push(acquire_b(c, b"m:binary", b"\x00host:1\xff", LONG_TTL).unwrap());
        let t = grant(c, "m:released", "carol", LONG_TTL);
        assert_eq!(release(c, "m:released", "carol"), 1);
        tokens.push(t);
        tokens.push(grant(c, "m:maxttl", "dave", MAX_TTL));
        tokens
    }

    fn keys(&self) -> Vec<String> {
        ["m:single", "m:reentrant", "m:binary", "m:released", "m:maxttl", "m:after-rewrite"].map(String::from).to_vec()
    }

    fn assert_neighbours(&self, c: &mut redis::Connection, what: &str) {
        self.assert_kept(c, &["m:single", "m:reentrant", "m:binary", "m:maxttl"], what);
        assert!(!exists(c, "m:released"), "{what}: a released lock came back");
    }

    fn assert_fresh_tokens_larger(&self, c: &mut redis::Connection, max: i64, last: i64, what: &str) -> i64 {
        let t2 = self.assert_fresh_grants_larger(c, max, last, what);
        assert_eq!(release(c, "m:single", "alice"), 1, "{what}: holder can release after reload");
        let t3 = grant(c, "m:single", "frank", LONG_TTL);
        assert!(t3 > t2, "{what}: token {t3} after release not above {t2}");
        t3
    }

    fn change_after_rewrite(&self, c: &mut redis::Connection, tokens: &mut Vec<i64>) {
        let t = grant(c, "m:after-rewrite", "ivan", LONG_TTL);
        let i = held(c, "m:after-rewrite");
        assert_eq!((i.owner.as_deref(), i.token, i.holds), (Some(&b"ivan"[..]), t, 1));
        tokens.push(t);
        let reentrant = held(c, "m:reentrant").token;
        assert_eq!(acquire(c, "m:reentrant", "bob", LONG_TTL), Some(reentrant));
        assert_eq!(release(c, "m:reentrant", "bob"), 1);
    }

    /// Grants, reentries, extends and releases on 30 keys; MULTI and a script.
    fn stream(
        &self,
        master: &Server,
        replica: &Server,
        m: &mut redis::Connection,
        tokens: &mut Vec<i64>,
    ) -> Vec<String> {
        let mut r = replica.conn();
        let mut last = tokens.iter().copied().max().unwrap_or(0);
        let mut keys = vec![];
        for i in 0..30 {
            let key = format!("m:k{i}");
            let t = grant(m, &key, "alice", LONG_TTL);
            assert!(t > last);
            last = t;
            tokens.push(t);
            if i % 2 == 0 {
                assert_eq!(acquire(m, &key, "alice", 2 * LONG_TTL), Some(t));
            }
            if i % 3 == 0 {
                assert_eq!(extend(m, &key, "alice", 3 * LONG_TTL), 1);
            }
            if i % 5 == 0 {
                release(m, &key, "alice");
            }
            keys.push(key);
        }
        await_sync(master, replica);
        for key in &keys {
            match lock_info(m, key) {
                Some(_) => assert_replica_same(self, m, &mut r, key, "streamed"),
                None => assert!(!exists(&mut r, key), "{key} free on the master but present on the replica"),
            }
        }
        // Release to free on the master: the key goes on the replica too.
        assert_eq!(release(m, "m:k1", "alice"), 1);
        await_sync(master, replica);
        assert!(!exists(&mut r, "m:k1"));
        // Commands in MULTI and scripts replicate too.
        ok(m, &["MULTI"]);
        raws(m, &["LOCK.ACQUIRE", "m:tx", "bob", "600000"]);
        raws(m, &["FENCE.NEXT", "m:tx-fence"]);
        raws(m, &["EXEC"]);
        raws(m, &["EVAL", "return redis.call('LOCK.ACQUIRE', KEYS[1], 'carol', '600000')", "1", "m:lua"]);
        await_sync(master, replica);
        assert_replica_same(self, m, &mut r, "m:tx", "MULTI");
        assert_replica_same(self, m, &mut r, "m:lua", "EVAL");
        assert!(held(&mut r, "m:tx").token > 0 && held(&mut r, "m:lua").token > 0);
        assert_eq!(fence_current(&mut r, "m:tx-fence"), fence_current(m, "m:tx-fence"));
        tokens.push(held(m, "m:lua").token);
        tokens.push(fence_current(m, "m:tx-fence"));
        // A new token is larger than everything before.
        push_fresh(tokens, grant(m, "m:k1", "zed", LONG_TTL));
        keys.extend(["m:tx".to_string(), "m:lua".to_string()]);
        keys
    }
}

// ---------------------------------------------------------------------------------------
// Read-write lock
// ---------------------------------------------------------------------------------------

pub struct RwLock;

const RW_KEYS: [&str; 5] = ["rw:readers", "rw:writer", "rw:both", "rw:released", "rw:after"];

impl LockKind for RwLock {
    fn names(&self) -> Names {
        Names { name: "rwlock", prefix: "rw", type_name: "lockrwlck" }
    }

    fn state(&self, c: &mut redis::Connection, key: &str) -> Option<KeyState> {
        rw_info(c, key).map(|i| KeyState::Held {
            holders: i.holders.into_iter().map(|h| ((h.owner, h.mode), (h.token, h.holds, h.ttl))).collect(),
            waiters: i.waiters,
        })
    }

    fn try_grant(&self, c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> Option<i64> {
        wlock(c, key, owner, ttl)
    }

    fn release(&self, c: &mut redis::Connection, key: &str, owner: &str) -> Option<i64> {
        Some(wunlock(c, key, owner))
    }

    fn writes(&self, key: &str, owner: &str, new_key: &str) -> Vec<Vec<String>> {
        vec![
            args(&["RWLOCK.RLOCK", key, "z", "1000"]),
            args(&["RWLOCK.WLOCK", new_key, "z", "1000"]),
            args(&["RWLOCK.RUNLOCK", key, owner]),
            args(&["RWLOCK.WUNLOCK", key, owner]),
            args(&["RWLOCK.EXTEND", key, owner, "1000"]),
        ]
    }

    /// Readers with several holds and different leases, a reentrant writer, an owner
    /// holding both modes, a released lock.
    fn build(&self, c: &mut redis::Connection) -> Vec<i64> {
        let mut tokens = vec![];
        let r1 = rgrant(c, "rw:readers", "r1", LONG_TTL);
        assert_eq!(rlock(c, "rw:readers", "r1", LONG_TTL), Some(r1));
        tokens.push(r1);
        tokens.push(rgrant(c, "rw:readers", "r2", LONG_TTL + 50_000));
        tokens.push(rgrant(c, "rw:readers", "r3", LONG_TTL - 50_000));
        let w = wgrant(c, "rw:writer", "w", LONG_TTL);
        for _ in 0..2 {
            assert_eq!(wlock(c, "rw:writer", "w", LONG_TTL + 10_000), Some(w));
        }
        tokens.push(w);
        tokens.push(wgrant(c, "rw:both", "a", LONG_TTL));
        let ar = rgrant(c, "rw:both", "a", LONG_TTL - 100_000);
        assert_eq!(rlock(c, "rw:both", "a", LONG_TTL - 100_000), Some(ar));
        tokens.push(ar);
        tokens.push(rgrant(c, "rw:released", "gone", LONG_TTL));
        assert_eq!(runlock(c, "rw:released", "gone"), 1);
        tokens
    }

    fn keys(&self) -> Vec<String> {
        RW_KEYS.map(String::from).to_vec()
    }

    fn assert_neighbours(&self, c: &mut redis::Connection, what: &str) {
        self.assert_kept(c, &["rw:readers", "rw:writer", "rw:both"], what);
        assert!(!exists(c, "rw:released"), "{what}: a released lock came back");
    }

    fn assert_fresh_tokens_larger(&self, c: &mut redis::Connection, max: i64, last: i64, what: &str) -> i64 {
        let t = wgrant(c, "rw:released", "fresh", LONG_TTL);
        assert!(t > max && t > last, "{what}: fresh token {t} not above {max} / {last}");
        let r = rgrant(c, "rw:fresh", "fresh", LONG_TTL);
        assert!(r > t, "{what}: fresh token {r} not above {t}");
        assert_eq!(wunlock(c, "rw:released", "fresh"), 1);
        assert_eq!(runlock(c, "rw:fresh", "fresh"), 1);
        r
    }

    /// The reentrant writer needs exactly three unlocks.
    fn assert_holds_count_down(&self, c: &mut redis::Connection, what: &str) {
        for i in 0..3 {
            assert_eq!(wunlock(c, "rw:writer", "w"), 1, "{what}: WUNLOCK {i}");
        }
        assert_eq!(wunlock(c, "rw:writer", "w"), 0, "{what}: one WUNLOCK too many");
        assert!(!exists(c, "rw:writer"), "{what}");
    }

    fn change_after_rewrite(&self, c: &mut redis::Connection, tokens: &mut Vec<i64>) {
        let r1 = rw_held(c, "rw:readers").holder("r1", "read").token;
        assert_eq!(rlock(c, "rw:readers", "r1", LONG_TTL + 20_000), Some(r1));
        assert_eq!(runlock(c, "rw:readers", "r2"), 1);
        assert_eq!(wunlock(c, "rw:both", "a"), 1);
        assert_eq!(rwextend(c, "rw:writer", "w", 2 * LONG_TTL), 1);
        tokens.push(rgrant(c, "rw:after", "x", LONG_TTL));
        tokens.push(rgrant(c, "rw:after", "y", LONG_TTL - 1_000));
        assert_eq!(wlock(c, "rw:after", "x", LONG_TTL), None, "upgrade while y reads");
        assert_eq!(state_of(c, "rw:readers").unwrap()[&(b"r1".to_vec(), "read".to_string())].1, 3);
    }

    /// A reader that ends while another reads on: the key stays with the other.
    fn start_short(&self, c: &mut redis::Connection, ttl: i64) -> Option<Short> {
        let soon = rgrant(c, "rw:soon", "s", ttl);
        let keep = rgrant(c, "rw:soon", "k", LONG_TTL);
        let i = rw_held(c, "rw:soon");
        let mut rest = HolderMap::new();
        let k = i.holder("k", "read");
        rest.insert((b"k".to_vec(), "read".to_string()), (keep, k.holds, k.ttl));
        Some(Short { key: "rw:soon".into(), owner: "s".into(), token: soon, ttl: i.holder("s", "read").ttl, rest, digest: String::new() })
    }

    /// Every kind of change: reentry, unlocks, upgrade, downgrade, extend, a grant to a
    /// waiter, MULTI, a script, and leases that end on the master (a whole key, and one
    /// holder of two), observed on the replica; writes refused there.
    fn stream(
        &self,
        master: &Server,
        replica: &Server,
        m: &mut redis::Connection,
        tokens: &mut Vec<i64>,
    ) -> Vec<String> {
        let mut r = replica.conn();
        let r1 = rw_held(m, "rw:readers").holder("r1", "read").token;
        assert_eq!(rlock(m, "rw:readers", "r1", LONG_TTL + 30_000), Some(r1));
        assert_eq!(runlock(m, "rw:readers", "r2"), 1);
        assert_eq!(runlock(m, "rw:readers", "r3"), 1);
        tokens.push(wlock(m, "rw:readers", "r1", LONG_TTL).expect("upgrade of the sole reader"));
        assert_eq!(wunlock(m, "rw:both", "a"), 1);
        assert_eq!(rwextend(m, "rw:both", "a", 2 * LONG_TTL), 1);
        assert_eq!(wunlock(m, "rw:writer", "w"), 1);
        tokens.push(rgrant(m, "rw:writer", "w", LONG_TTL)); // downgrade
        tokens.push(rgrant(m, "rw:after", "x", LONG_TTL));
        tokens.push(rgrant(m, "rw:after", "y", 3 * LONG_TTL));
        // A grant to a waiter.
        tokens.push(wgrant(m, "rw:wait", "holder", LONG_TTL));
        let mut q = Waiter::acquire(master, "RWLOCK.RLOCK", "rw:wait", "q", LONG_TTL, 0).queued_rw(m, 1);
        assert_eq!(wunlock(m, "rw:wait", "holder"), 1);
        tokens.push(q.granted());
        // MULTI and a script.
        ok(m, &["MULTI"]);
        raws(m, &["RWLOCK.WLOCK", "rw:tx", "t", "600000"]);
        raws(m, &["RWLOCK.RLOCK", "rw:tx", "t", "600000"]);
        raws(m, &["EXEC"]);
        raws(m, &["EVAL", "return redis.call('RWLOCK.RLOCK', KEYS[1], 'lua', '600000')", "1", "rw:lua"]);
        // Leases that end on the master: a whole key, and one holder of two. (Synced first:
        // right after a full sync Redis 7.0 may hold the stream back for up to 1 s.)
        await_sync(master, replica);
        rgrant(m, "rw:short", "s", 1_000);
        rgrant(m, "rw:mixed", "short", 1_000);
        rgrant(m, "rw:mixed", "long", LONG_TTL);
        await_sync(master, replica);
        assert!(exists(&mut r, "rw:short"), "the short lease did not reach the replica");
        let keys: Vec<String> = [
            "rw:readers",
            "rw:writer",
            "rw:both",
            "rw:released",
            "rw:after",
            "rw:wait",
            "rw:tx",
            "rw:lua",
            "rw:short",
            "rw:mixed",
        ]
        .map(String::from)
        .to_vec();
        // The replica never ends a lease itself: the master's end reaches it (observed with
        // DBSIZE, which touches no key).
        let n_keys = dbsize(&mut r);
        wait_until(PATIENCE, "the short lease end reached the replica", || dbsize(&mut r) == n_keys - 1);
        assert!(!exists(&mut r, "rw:short"));
        await_sync(master, replica);
        assert_replica_same_keys(self, m, &mut r, &keys, "streaming");
        assert_eq!(rw_held(&mut r, "rw:mixed").who(), who(&[("long", "read")]));
        assert_eq!(rw_held(&mut r, "rw:readers").who(), who(&[("r1", "read"), ("r1", "write")]));
        assert_eq!(rw_held(&mut r, "rw:readers").holder("r1", "read").holds, 3);
        assert_eq!(rw_held(&mut r, "rw:writer").who(), who(&[("w", "read"), ("w", "write")]));
        assert_eq!(rw_held(&mut r, "rw:writer").holder("w", "write").holds, 2);
        assert_eq!(rw_held(&mut r, "rw:wait").who(), who(&[("q", "read")]));
        assert_eq!(rw_held(&mut r, "rw:tx").who(), who(&[("t", "read"), ("t", "write")]));
        // Writes are refused on the replica, and change nothing there.
        let writes: &[&[&str]] = &[
            &["RWLOCK.RLOCK", "rw:after", "z", "1000"],
            &["RWLOCK.WLOCK", "rw:new", "z", "1000"],
            &["RWLOCK.RUNLOCK", "rw:after", "x"],
            &["RWLOCK.WUNLOCK", "rw:writer", "w"],
            &["RWLOCK.EXTEND", "rw:after", "x", "1000"],
        ];
        assert_refused_writes_change_nothing(self, master, replica, m, &mut r, writes, "rw:new", &keys);
        // Releases to free remove the key on the replica too; new tokens are larger.
        assert_eq!(runlock(m, "rw:after", "x"), 1);
        assert_eq!(runlock(m, "rw:after", "y"), 1);
        push_fresh(tokens, wgrant(m, "rw:released", "n", LONG_TTL));
        assert_free_reaches_replica(self, master, replica, m, &mut r, "rw:after", &keys);
        assert_eq!(wunlock(m, "rw:released", "n"), 1);
        keys
    }
}

// ---------------------------------------------------------------------------------------
// Fences
// ---------------------------------------------------------------------------------------

pub struct Fence;

impl LockKind for Fence {
    fn names(&self) -> Names {
        Names { name: "fence", prefix: "f", type_name: "lockfence" }
    }

    fn has_leases(&self) -> bool {
        false
    }

    fn has_holds(&self) -> bool {
        false
    }

    fn state(&self, c: &mut redis::Connection, key: &str) -> Option<KeyState> {
        match fence_current(c, key) {
            0 => None,
            t => Some(KeyState::Fence(t)),
        }
    }

    fn try_grant(&self, c: &mut redis::Connection, key: &str, _owner: &str, _ttl: i64) -> Option<i64> {
        Some(fence_next(c, key))
    }

    fn release(&self, _c: &mut redis::Connection, _key: &str, _owner: &str) -> Option<i64> {
        None
    }

    fn writes(&self, key: &str, _owner: &str, new_key: &str) -> Vec<Vec<String>> {
        vec![
            vec!["FENCE.NEXT".into(), key.into()],
            vec!["FENCE.NEXT".into(), new_key.into()],
            vec!["FENCE.CHECK".into(), key.into(), i64::MAX.to_string()],
        ]
    }

    /// Tokens drawn with NEXT, and a fence that recorded a checked token above them.
    fn build(&self, c: &mut redis::Connection) -> Vec<i64> {
        let mut tokens = vec![];
        for _ in 0..5 {
            tokens.push(fence_next(c, "f:next"));
        }
        let f = fence_next(c, "f:checked");
        tokens.push(f);
        assert_eq!(fence_check(c, "f:checked", &(f + 7).to_string()), Ok(1));
        tokens
    }

    fn keys(&self) -> Vec<String> {
        vec!["f:next".into(), "f:checked".into()]
    }

    fn assert_neighbours(&self, c: &mut redis::Connection, what: &str) {
        self.assert_kept(c, &["f:next", "f:checked"], what);
    }

    fn assert_fresh_tokens_larger(&self, c: &mut redis::Connection, max: i64, last: i64, what: &str) -> i64 {
        let f = fence_next(c, "f:next");
        assert!(f > last && f > max, "{what}: FENCE.NEXT {f} not above {last}");
        let checked = fence_current(c, "f:checked");
        let g = fence_next(c, "f:checked");
        assert!(g > checked && g > max, "{what}: FENCE.NEXT {g} not above {checked} / {max}");
        g
    }

    fn change_after_rewrite(&self, c: &mut redis::Connection, tokens: &mut Vec<i64>) {
        tokens.push(fence_next(c, "f:next"));
    }

    /// Ten NEXT on one fence, a CHECK far above them on another.
    fn stream(
        &self,
        master: &Server,
        replica: &Server,
        m: &mut redis::Connection,
        tokens: &mut Vec<i64>,
    ) -> Vec<String> {
        let mut r = replica.conn();
        let mut last = 0;
        for _ in 0..10 {
            last = fence_next(m, "f:stream");
            tokens.push(last);
        }
        assert_eq!(fence_check(m, "f:stream-g", &(last + 3).to_string()), Ok(1));
        tokens.push(last + 3);
        await_sync(master, replica);
        assert_eq!(fence_current(&mut r, "f:stream"), last);
        assert_eq!(fence_current(&mut r, "f:stream-g"), last + 3);
        // The fence goes on from its highest.
        let n = fence_next(m, "f:stream");
        assert!(n > last, "FENCE.NEXT {n} not above {last}");
        tokens.push(n);
        vec!["f:stream".into(), "f:stream-g".into()]
    }
}

// ---------------------------------------------------------------------------------------
// Semaphore
// ---------------------------------------------------------------------------------------

pub struct Semaphore;

/// The limit of the semaphores the generic scenarios grant (with all of it: a grant that
/// excludes every other owner).
const SEM_LIMIT: i64 = 3;

const SEM_KEYS: [&str; 6] = ["s:shared", "s:full", "s:binary", "s:maxlimit", "s:released", "s:after"];

/// The mode a semaphore's holder is compared by: its permits and the limit.
fn sem_mode(permits: i64, limit: i64) -> String {
    format!("{permits} of {limit}")
}

impl LockKind for Semaphore {
    fn names(&self) -> Names {
        Names { name: "semaphore", prefix: "s", type_name: "locksemph" }
    }

    /// Holders keyed by owner and "<permits> of <limit>", so that permits and the limit
    /// are compared too.
    fn state(&self, c: &mut redis::Connection, key: &str) -> Option<KeyState> {
        sem_info(c, key).map(|i| {
            let limit = i.limit;
            KeyState::Held {
                holders: i
                    .holders
                    .into_iter()
                    .map(|h| ((h.owner, sem_mode(h.permits, limit)), (h.token, h.holds, h.ttl)))
                    .collect(),
                waiters: i.waiters,
            }
        })
    }

    fn try_grant(&self, c: &mut redis::Connection, key: &str, owner: &str, ttl: i64) -> Option<i64> {
        sem_acquire(c, key, owner, SEM_LIMIT, SEM_LIMIT, ttl)
    }

    fn release(&self, c: &mut redis::Connection, key: &str, owner: &str) -> Option<i64> {
        Some(sem_release(c, key, owner))
    }

    fn writes(&self, key: &str, owner: &str, new_key: &str) -> Vec<Vec<String>> {
        vec![
            args(&["SEM.ACQUIRE", key, "z", "3", "1000"]),
            args(&["SEM.ACQUIRE", key, owner, "3", "1000", "COUNT", "3"]),
            args(&["SEM.ACQUIRE", new_key, "bob", "3", "1000", "COUNT", "1", "WAIT", "10"]),
            args(&["SEM.RELEASE", key, owner]),
            args(&["SEM.EXTEND", key, owner, "1000"]),
        ]
    }

    /// Three holders with their own permits, leases and holds on one semaphore; one owner
    /// with the whole limit and three holds; a binary owner; the largest limit with the
    /// longest lease; a released semaphore.
    fn build(&self, c: &mut redis::Connection) -> Vec<i64> {
        let mut tokens = vec![];
        let a = sem_grant(c, "s:shared", "a", 5, 2, LONG_TTL);
        assert_eq!(sem_acquire(c, "s:shared", "a", 5, 2, LONG_TTL), Some(a));
        tokens.push(a);
        tokens.push(sem_grant(c, "s:shared", "b", 5, 1, LONG_TTL + 50_000));
        tokens.push(sem_grant(c, "s:shared", "c", 5, 2, LONG_TTL - 50_000));
        assert_eq!(sem_held(c, "s:shared").available, 0);
        let f = sem_grant(c, "s:full", "bob", 3, 3, LONG_TTL);
        for ttl in [LONG_TTL + 10_000, LONG_TTL] {
            assert_eq!(sem_acquire(c, "s:full", "bob", 3, 3, ttl), Some(f));
        }
        tokens.push(f);
        let v = raw(c, &[b"SEM.ACQUIRE", b"s:binary", b"\x00host:1\xff", b"2", b"600000"]);
        tokens.push(value_int(&v).unwrap_or_else(|| panic!("SEM.ACQUIRE of a binary owner answered {v:?}")));
        tokens.push(sem_grant(c, "s:maxlimit", "dave", MAX_LIMIT, MAX_LIMIT, MAX_TTL));
        tokens.push(sem_grant(c, "s:released", "carol", 4, 2, LONG_TTL));
        assert_eq!(sem_release(c, "s:released", "carol"), 1);
        tokens
    }

    fn keys(&self) -> Vec<String> {
        SEM_KEYS.map(String::from).to_vec()
    }

    fn assert_neighbours(&self, c: &mut redis::Connection, what: &str) {
        self.assert_kept(c, &["s:shared", "s:full", "s:binary", "s:maxlimit"], what);
        assert!(!exists(c, "s:released"), "{what}: a released semaphore came back");
        // The limits came back with the holders.
        assert_eq!(err(c, &["SEM.ACQUIRE", "s:shared", "z", "4", "1000"]), limit_mismatch(5), "{what}");
        assert_eq!(sem_held(c, "s:maxlimit").limit, MAX_LIMIT, "{what}");
    }

    fn assert_fresh_tokens_larger(&self, c: &mut redis::Connection, max: i64, last: i64, what: &str) -> i64 {
        let t = sem_grant(c, "s:released", "erin", 3, 3, LONG_TTL);
        assert!(t > max && t > last, "{what}: token {t} on a released name not above {max} / {last}");
        let t2 = sem_grant(c, "s:brand-new", "erin", 4, 1, LONG_TTL);
        assert!(t2 > t, "{what}: token {t2} on a new name not above {t}");
        // A holder of the shared semaphore gives its permit back, and a newcomer gets it.
        assert_eq!(sem_release(c, "s:shared", "b"), 1, "{what}: holder can release after reload");
        let t3 = sem_grant(c, "s:shared", "frank", 5, 1, LONG_TTL);
        assert!(t3 > t2, "{what}: token {t3} after release not above {t2}");
        t3
    }

    /// The owner of the whole limit needs exactly three releases.
    fn assert_holds_count_down(&self, c: &mut redis::Connection, what: &str) {
        for i in 0..3 {
            assert_eq!(sem_acquire(c, "s:full", "x", 3, 1, LONG_TTL), None, "{what}: a newcomer while bob holds all");
            assert_eq!(sem_release(c, "s:full", "bob"), 1, "{what}: release {i}");
        }
        assert_eq!(sem_release(c, "s:full", "bob"), 0, "{what}: one release too many");
        assert!(!exists(c, "s:full"), "{what}");
    }

    fn change_after_rewrite(&self, c: &mut redis::Connection, tokens: &mut Vec<i64>) {
        let a = sem_held(c, "s:shared").holder("a").token;
        assert_eq!(sem_acquire(c, "s:shared", "a", 5, 2, LONG_TTL + 20_000), Some(a));
        assert_eq!(sem_release(c, "s:shared", "c"), 1);
        assert_eq!(sem_extend(c, "s:full", "bob", 2 * LONG_TTL), 1);
        tokens.push(sem_grant(c, "s:after", "x", 4, 1, LONG_TTL));
        tokens.push(sem_grant(c, "s:after", "y", 4, 3, LONG_TTL - 1_000));
        assert_eq!(sem_acquire(c, "s:after", "z", 4, 1, LONG_TTL), None, "s:after is full");
        let i = sem_held(c, "s:shared");
        assert_eq!((i.holder("a").holds, i.available, i.who()), (3, 2, owners(&["a", "b"])));
    }

    /// A holder whose lease ends while another holds on: the key stays with the other.
    fn start_short(&self, c: &mut redis::Connection, ttl: i64) -> Option<Short> {
        let soon = sem_grant(c, "s:soon", "short", 3, 1, ttl);
        let keep = sem_grant(c, "s:soon", "keep", 3, 2, LONG_TTL);
        let i = sem_held(c, "s:soon");
        let k = i.holder("keep");
        let mut rest = HolderMap::new();
        rest.insert((b"keep".to_vec(), sem_mode(2, 3)), (keep, k.holds, k.ttl));
        Some(Short { key: "s:soon".into(), owner: "short".into(), token: soon, ttl: i.holder("short").ttl, rest, digest: String::new() })
    }

    /// Every kind of change: reentry, releases, extend, grants to several waiters in one
    /// pass, MULTI, a script, and leases that end on the master (a whole key, and one
    /// holder of two), observed on the replica; writes refused there.
    fn stream(
        &self,
        master: &Server,
        replica: &Server,
        m: &mut redis::Connection,
        tokens: &mut Vec<i64>,
    ) -> Vec<String> {
        let mut r = replica.conn();
        let a = sem_held(m, "s:shared").holder("a").token;
        assert_eq!(sem_acquire(m, "s:shared", "a", 5, 2, LONG_TTL + 30_000), Some(a));
        assert_eq!(sem_release(m, "s:shared", "c"), 1);
        assert_eq!(sem_extend(m, "s:shared", "b", 2 * LONG_TTL), 1);
        assert_eq!(sem_release(m, "s:full", "bob"), 1);
        tokens.push(sem_grant(m, "s:after", "x", 4, 1, LONG_TTL));
        tokens.push(sem_grant(m, "s:after", "y", 4, 2, 3 * LONG_TTL));
        // Grants to waiters: two in one pass, the third later.
        tokens.push(sem_grant(m, "s:wait", "holder", 3, 3, LONG_TTL));
        let mut q1 = queue_sem(master, m, "s:wait", "q1", 3, 1, LONG_TTL, 0, 1);
        let mut q2 = queue_sem(master, m, "s:wait", "q2", 3, 2, LONG_TTL, 0, 2);
        let mut q3 = queue_sem(master, m, "s:wait", "q3", 3, 1, LONG_TTL, 0, 3);
        assert_eq!(sem_release(m, "s:wait", "holder"), 1);
        tokens.push(q1.granted());
        tokens.push(q2.granted());
        q3.assert_still_blocked();
        assert_eq!(sem_release(m, "s:wait", "q1"), 1);
        tokens.push(q3.granted());
        // MULTI and a script.
        ok(m, &["MULTI"]);
        raws(m, &["SEM.ACQUIRE", "s:tx", "t", "3", "600000", "COUNT", "2"]);
        raws(m, &["SEM.ACQUIRE", "s:tx", "u", "3", "600000"]);
        raws(m, &["SEM.ACQUIRE", "s:tx", "t", "3", "600000", "COUNT", "2"]);
        raws(m, &["EXEC"]);
        raws(m, &["EVAL", "return redis.call('SEM.ACQUIRE', KEYS[1], 'lua', '2', '600000')", "1", "s:lua"]);
        // Leases that end on the master: a whole key, and one holder of two. (Synced first:
        // right after a full sync Redis 7.0 may hold the stream back for up to 1 s.)
        await_sync(master, replica);
        sem_grant(m, "s:short", "s", 3, 2, 1_000);
        sem_grant(m, "s:mixed", "short", 3, 2, 1_000);
        sem_grant(m, "s:mixed", "long", 3, 1, LONG_TTL);
        let mixed = digest_value(m, "s:mixed");
        await_sync(master, replica);
        assert!(exists(&mut r, "s:short"), "the short lease did not reach the replica");
        let keys: Vec<String> =
            ["s:shared", "s:full", "s:after", "s:wait", "s:tx", "s:lua", "s:short", "s:mixed"].map(String::from).to_vec();
        // The replica never ends a lease itself: the master's end reaches it (observed with
        // EXISTS, which runs no command of ours; and DEBUG DIGEST, which await_sync
        // compares, for the holder that ended beside another).
        wait_until(PATIENCE, "the short lease end reached the replica", || !exists(&mut r, "s:short"));
        wait_until(PATIENCE, "the short holder ended on the master", || digest_value(m, "s:mixed") != mixed);
        await_sync(master, replica);
        assert_replica_same_keys(self, m, &mut r, &keys, "streaming");
        let i = sem_held(&mut r, "s:mixed");
        assert_eq!((i.who(), i.available), (owners(&["long"]), 2));
        let i = sem_held(&mut r, "s:shared");
        assert_eq!((i.who(), i.holder("a").holds, i.available), (owners(&["a", "b"]), 3, 2));
        assert_eq!(sem_held(&mut r, "s:full").holder("bob").holds, 2);
        let i = sem_held(&mut r, "s:wait");
        assert_eq!((i.who(), i.available, i.waiters), (owners(&["q2", "q3"]), 0, 0));
        let i = sem_held(&mut r, "s:tx");
        assert_eq!((i.who(), i.holder("t").holds, i.available), (owners(&["t", "u"]), 2, 0));
        assert_eq!(sem_held(&mut r, "s:lua").who(), owners(&["lua"]));
        // Writes are refused on the replica, and change nothing there.
        let writes: &[&[&str]] = &[
            &["SEM.ACQUIRE", "s:after", "z", "4", "1000"],
            &["SEM.ACQUIRE", "s:new", "z", "4", "1000", "COUNT", "2"],
            &["SEM.RELEASE", "s:after", "x"],
            &["SEM.EXTEND", "s:after", "x", "1000"],
        ];
        assert_refused_writes_change_nothing(self, master, replica, m, &mut r, writes, "s:new", &keys);
        // Releases to free remove the key on the replica too; new tokens are larger.
        assert_eq!(sem_release(m, "s:after", "x"), 1);
        assert_eq!(sem_release(m, "s:after", "y"), 1);
        push_fresh(tokens, sem_grant(m, "s:released", "n", 2, 2, LONG_TTL));
        assert_free_reaches_replica(self, master, replica, m, &mut r, "s:after", &keys);
        assert_eq!(sem_release(m, "s:released", "n"), 1);
        keys
    }
}
