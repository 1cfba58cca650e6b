//! Operation histories of lock clients, and an offline checker for them.
//!
//! Std only, no dependency on the rest of the test harness: the tests that use it mount it
//! with `#[path = "support/history.rs"] mod history;`.
//!
//! # API (stable)
//!
//! * [`Event`]: one operation: `op` ([`Op`]), `key`, `owner`, `ttl_ms`, `token` (only for
//!   [`Op::FenceWrite`]: the token the write carried), `invoke`/`complete` (a `Duration`
//!   since one `Instant` shared by every recording thread) and `res` ([`Res`]).
//! * [`Res`]: `Granted(token)` | `Refused` (nil) | `Ok` (1, or an accepted fenced write) |
//!   `NotHeld` (0) | `Error(text)` (an error reply: changed nothing, e.g. `-STALE`) |
//!   `Unknown` (time-out or lost connection: indeterminate, it may take effect at any
//!   time after its invoke).
//! * [`Recorder`]: thread-safe, cloneable log with one time base (`Recorder::new()`, or
//!   `Recorder::with_base(instant)` to share a base across recorders).
//!   `rec.record(op, key, owner, ttl_ms, || res)` times and logs one operation and returns
//!   its `Res`; `rec.record_fence(key, owner, token, || res)` logs a fenced write;
//!   `rec.push(event)`, `rec.now()`, `rec.events()`. Give each owner one connection (its
//!   operations sequential) and a fresh owner name after a lost connection: the checker
//!   is then exact about reference counts (see the end of this comment).
//! * [`ev`] / [`fence_ev`]: build events by hand (times in ms), for checker tests.
//! * [`check(&events) -> Vec<Violation>`](check): every violation found;
//!   [`check_fence_log(resource, &accepted_tokens)`](check_fence_log): a resource's own
//!   acceptance order must never go down; [`render(&events, &violations, max)`](render):
//!   readable report (each violation, its events and the owners' neighbouring events as
//!   a minimal history); [`assert_clean(&events, what)`](assert_clean): panics with it.
//! * [`Violation`] `{ kind: ViolationKind, what: String, events: Vec<usize> }` (indices
//!   into the checked slice); [`ViolationKind`]: `Overlap`, `RwOverlap`, `RepeatedToken`,
//!   `TokenOrder`, `NonHolderAck`, `StaleFencedWrite`, `SemOverLimit`, `SemLimitMismatch`,
//!   `ReentryToken`.
//!
//! Operations: `Acquire`/`Release`/`Extend` (`LOCK.*`), `RLock`/`WLock`/`RUnlock`/`WUnlock`/
//! `RwExtend` (`RWLOCK.*`), `SemAcquire { limit, permits }`/`SemRelease`/`SemExtend`
//! (`SEM.*`; [`Op::sem`]`(limit, permits)` builds the acquire), `FenceWrite` (a write
//! guarded by `FENCE.CHECK` on resource `key`), `Del` (`DEL`/`UNLINK` of `key`) and
//! `FlushAll` (`FLUSHALL`/`FLUSHDB`, any key).
//! `Del`/`FlushAll` end every hold of the key; record them so holds end there.
//!
//! # What is checked, and why it is sound
//!
//! A violation is reported only when it *surely* happened, whatever the unknown
//! server-side times were. Every operation took effect at one instant between its invoke
//! and its complete (an `Unknown` one: at some instant after its invoke, or never).
//!
//! **Holds.** A hold is an *episode*: one owner, one mode (mutex, read, write or
//! semaphore; a semaphore hold also has its `permits` and the `limit` its grant stated), one
//! token, from its fresh grant to its end; reentrant grants (same owner, same mode, same
//! token) and acknowledged extends belong to it. For each episode two intervals are
//! derived:
//!
//! * the *sure* interval `[first grant complete, sure_end)`, inside which the hold surely
//!   existed. Why: the reply proves the grant happened by `complete`. A lease starts at the
//!   grant instant, which is at or after the acquire's invoke (also for a grant that waited
//!   with `WAIT`, whose lease starts at the hand-off), so it surely lasts until
//!   `invoke + ttl`. Likewise every acknowledged reentrant grant or extend proves the hold
//!   was alive when it took effect (at or after its invoke) and reset the lease to at least
//!   `invoke + ttl`. The lease in force is the one of the *last* reset, which may be shorter
//!   than an earlier one, so the lease bound is `max(latest reset invoke, min over resets
//!   that may have been the last (including unknown ones) of invoke + ttl)`. The hold may
//!   also end at a release (the one that can bring the hold count to zero: we end the sure
//!   interval at its invoke), a `Del`/`FlushAll` (at its invoke), or a 0 reply to its own
//!   release/extend (at its invoke). `sure_end` is the earliest of these, minus
//!   [`CLOCK_SLACK`] for the server's millisecond clock.
//! * the *possible* interval `[first grant invoke, possible_end]`, which surely contains the
//!   hold: the lease ends by `complete + ttl` of the last reset that may have applied (an
//!   unknown reset: never), a release that surely brought the count to zero ends it by its
//!   complete, a `Del` invoked after the grant by the `Del`'s complete, a 0 reply by its
//!   complete.
//!
//! Checks:
//!
//! * **Overlap / RwOverlap**: two conflicting episodes on one key whose *sure* intervals
//!   intersect. Mutex: any two episodes. Read-write: a write episode and any episode of
//!   another owner, or two episodes of one owner in one mode (a downgrade/upgrade, one
//!   owner in both modes, is allowed). An acquire with an unknown result counts as a hold
//!   only if its token shows up later (in a reentrant grant); it is never flagged.
//! * **ReentryToken**: two semaphore episodes of one owner on a key (different tokens)
//!   whose sure intervals intersect: its second grant came while it surely held, so it was
//!   a reentry and had to return the held token. (Holds of different owners may share a
//!   semaphore; a semaphore and any other kind of hold on one key conflict, `Overlap`.)
//! * **SemOverLimit**: at the start of some episode's sure interval, the permits of the
//!   semaphore episodes whose sure intervals contain that instant (each owner counted
//!   once) exceed the limit their grants stated (the largest, if they differ).
//! * **SemLimitMismatch**: two semaphore episodes with different stated limits whose
//!   sure intervals intersect: the later grant found the semaphore held, hence bound to the
//!   earlier holder's limit, and had to answer `-ERR limit mismatch`.
//! * **RepeatedToken**: a token granted to two different (owner, mode) on a key; or granted
//!   again to the same holder after its hold surely ended (released to zero, lease surely
//!   over, deleted, answered 0, or a conflicting grant of another token completed between).
//! * **TokenOrder**: a fresh grant A completed before a fresh grant B (another episode) was
//!   invoked, yet token(A) > token(B). (For B, an earlier unknown acquire of the same
//!   holder is taken as its possible start.)
//! * **NonHolderAck**: a release/extend answered 1 whose `[invoke, complete]` meets no
//!   *possible* interval of that owner (in that mode) and follows no unknown acquire of it.
//! * **StaleFencedWrite**: an accepted fenced write completed before another accepted one
//!   was invoked, with a larger token (real-time order); and, with [`check_fence_log`], a
//!   token below an earlier one in the resource's own acceptance order.
//!
//! Reference counting (releases against reentrant grants) is exact when one owner's
//! operations on one key do not overlap in time (one connection per owner) and none of
//! them is `Unknown` except the last. Otherwise the checker falls back to coarser,
//! still sound bounds (any release may end the hold; none is known to).

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tolerance for the server's millisecond wall clock (a deadline is `now_ms + ttl` with
/// `now_ms` truncated): leases are assumed to last at least `ttl - CLOCK_SLACK`.
pub const CLOCK_SLACK: Duration = Duration::from_millis(2);

const INF: Duration = Duration::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Acquire,
    Release,
    Extend,
    RLock,
    WLock,
    RUnlock,
    WUnlock,
    RwExtend,
    /// `SEM.ACQUIRE key owner limit ttl COUNT permits`: the grant holds `permits` of a
    /// semaphore of `limit`.
    SemAcquire { limit: u64, permits: u64 },
    SemRelease,
    SemExtend,
    FenceWrite,
    Del,
    FlushAll,
}

impl Op {
    /// `SEM.ACQUIRE` of `permits` of a semaphore of `limit`.
    pub fn sem(limit: u64, permits: u64) -> Op {
        Op::SemAcquire { limit, permits }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Res {
    Granted(i64),
    Refused,
    Ok,
    NotHeld,
    Error(String),
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub op: Op,
    pub key: String,
    pub owner: String,
    pub ttl_ms: u64,
    /// `FenceWrite` only: the token the write carried.
    pub token: i64,
    pub invoke: Duration,
    pub complete: Duration,
    pub res: Res,
}

impl Event {
    /// When the op surely had taken effect (if at all): `complete`, or never for `Unknown`.
    fn eff_complete(&self) -> Duration {
        if self.res == Res::Unknown {
            INF
        } else {
            self.complete
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms)
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.op {
            Op::Acquire => "LOCK.ACQUIRE",
            Op::Release => "LOCK.RELEASE",
            Op::Extend => "LOCK.EXTEND",
            Op::RLock => "RWLOCK.RLOCK",
            Op::WLock => "RWLOCK.WLOCK",
            Op::RUnlock => "RWLOCK.RUNLOCK",
            Op::WUnlock => "RWLOCK.WUNLOCK",
            Op::RwExtend => "RWLOCK.EXTEND",
            Op::SemAcquire { .. } => "SEM.ACQUIRE",
            Op::SemRelease => "SEM.RELEASE",
            Op::SemExtend => "SEM.EXTEND",
            Op::FenceWrite => "FENCED-WRITE",
            Op::Del => "DEL",
            Op::FlushAll => "FLUSHALL",
        };
        write!(f, "[{:.6}s .. {:.6}s] {name} {}", self.invoke.as_secs_f64(), self.complete.as_secs_f64(), self.key)?;
        if !self.owner.is_empty() {
            write!(f, " {}", self.owner)?;
        }
        if let Op::SemAcquire { limit, permits } = self.op {
            write!(f, " limit={limit} count={permits}")?;
        }
        if self.ttl_ms > 0 {
            write!(f, " ttl={}", self.ttl_ms)?;
        }
        if self.op == Op::FenceWrite {
            write!(f, " token={}", self.token)?;
        }
        match &self.res {
            Res::Granted(t) => write!(f, " -> granted {t}"),
            Res::Refused => write!(f, " -> nil"),
            Res::Ok => write!(f, " -> 1"),
            Res::NotHeld => write!(f, " -> 0"),
            Res::Error(e) => write!(f, " -> error {e}"),
            Res::Unknown => write!(f, " -> unknown"),
        }
    }
}

/// Builds an event by hand; times in milliseconds since the history's start.
pub fn ev(op: Op, key: &str, owner: &str, ttl_ms: u64, invoke_ms: u64, complete_ms: u64, res: Res) -> Event {
    Event {
        op,
        key: key.to_string(),
        owner: owner.to_string(),
        ttl_ms,
        token: 0,
        invoke: Duration::from_millis(invoke_ms),
        complete: Duration::from_millis(complete_ms),
        res,
    }
}

/// Builds a fenced write on `resource` carrying `token`; `res` is `Ok` when accepted.
pub fn fence_ev(resource: &str, owner: &str, token: i64, invoke_ms: u64, complete_ms: u64, res: Res) -> Event {
    Event { token, ..ev(Op::FenceWrite, resource, owner, 0, invoke_ms, complete_ms, res) }
}

/// A thread-safe history log. Clones share the log and the time base.
#[derive(Clone)]
pub struct Recorder {
    base: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::with_base(Instant::now())
    }

    /// A recorder whose times count from `base` (share one base across recorders).
    pub fn with_base(base: Instant) -> Recorder {
        Recorder { base, events: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn base(&self) -> Instant {
        self.base
    }

    /// Now, on the history's clock.
    pub fn now(&self) -> Duration {
        self.base.elapsed()
    }

    pub fn push(&self, e: Event) {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
    }

    /// Times `f` (which sends the command and reads its reply), logs it, returns its result.
    pub fn record(&self, op: Op, key: &str, owner: &str, ttl_ms: u64, f: impl FnOnce() -> Res) -> Res {
        let invoke = self.now();
        let res = f();
        let complete = self.now();
        self.push(Event {
            op,
            key: key.to_string(),
            owner: owner.to_string(),
            ttl_ms,
            token: 0,
            invoke,
            complete,
            res: res.clone(),
        });
        res
    }

    /// Like `record`, for a write carrying `token` guarded by `FENCE.CHECK`.
    pub fn record_fence(&self, key: &str, owner: &str, token: i64, f: impl FnOnce() -> Res) -> Res {
        let invoke = self.now();
        let res = f();
        let complete = self.now();
        self.push(Event {
            op: Op::FenceWrite,
            key: key.to_string(),
            owner: owner.to_string(),
            ttl_ms: 0,
            token,
            invoke,
            complete,
            res: res.clone(),
        });
        res
    }

    pub fn len(&self) -> usize {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    Overlap,
    RwOverlap,
    RepeatedToken,
    TokenOrder,
    NonHolderAck,
    StaleFencedWrite,
    SemOverLimit,
    SemLimitMismatch,
    ReentryToken,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: ViolationKind,
    pub what: String,
    /// Indices of the events involved, in the checked slice.
    pub events: Vec<usize>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.what)
    }
}

// ---------------------------------------------------------------------------------------
// Episodes
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Mode {
    Mutex,
    Read,
    Write,
    Sem,
}

fn grant_mode(op: Op) -> Option<Mode> {
    match op {
        Op::Acquire => Some(Mode::Mutex),
        Op::RLock => Some(Mode::Read),
        Op::WLock => Some(Mode::Write),
        Op::SemAcquire { .. } => Some(Mode::Sem),
        _ => None,
    }
}

fn release_mode(op: Op) -> Option<Mode> {
    match op {
        Op::Release => Some(Mode::Mutex),
        Op::RUnlock => Some(Mode::Read),
        Op::WUnlock => Some(Mode::Write),
        Op::SemRelease => Some(Mode::Sem),
        _ => None,
    }
}

fn extend_modes(op: Op) -> &'static [Mode] {
    match op {
        Op::Extend => &[Mode::Mutex],
        Op::RwExtend => &[Mode::Read, Mode::Write],
        Op::SemExtend => &[Mode::Sem],
        _ => &[],
    }
}

/// Two holds that must never coexist on one key. Semaphore holds of different owners
/// may (the limit is checked by counting permits); one owner holds one at a time; a key
/// holds one type of lock at a time.
fn conflicts(m1: Mode, o1: &str, m2: Mode, o2: &str) -> bool {
    match (m1, m2) {
        (Mode::Sem, Mode::Sem) => o1 == o2,
        (Mode::Mutex, _) | (_, Mode::Mutex) | (Mode::Sem, _) | (_, Mode::Sem) => true,
        _ if o1 == o2 => m1 == m2,
        (Mode::Write, _) | (_, Mode::Write) => true,
        _ => false,
    }
}

#[derive(Debug, Clone)]
struct Episode {
    key: String,
    owner: String,
    mode: Mode,
    token: i64,
    /// Known grants with this token (first = the one that opened the episode).
    grants: Vec<usize>,
    /// Resets surely applied to this hold (grants, attributed acknowledged extends).
    sure_resets: Vec<usize>,
    /// Resets that may have applied (unknown acquires/extends, unattributable extends).
    poss_resets: Vec<usize>,
    /// Exact reference counting (sequential stream): bounds on the hold count.
    count_lo: i64,
    count_hi: Option<i64>,
    /// The sure interval ends no later than this (release, 0 reply).
    sure_cap: Duration,
    /// The hold surely ended by this (release to zero, 0 reply, next token).
    pos_cap: Duration,
    /// A repeat of a token whose hold had surely ended (already reported).
    repeat: bool,
    /// Earliest possible instant of the fresh grant (for the order check).
    create_lo: Duration,
    /// Semaphore holds: the permits held and the limit its grant stated (else 0).
    permits: u64,
    limit: u64,
    // Derived:
    sure_start: Duration,
    sure_end: Duration,
    pos_start: Duration,
    pos_end: Duration,
}

struct KeyInfo {
    /// Known grants on the key: (event, mode, owner, token), sorted by invoke.
    grants: Vec<usize>,
    /// Del/FlushAll events affecting the key.
    dels: Vec<usize>,
}

struct Ctx<'a> {
    ev: &'a [Event],
    keys: HashMap<&'a str, KeyInfo>,
    flushes: Vec<usize>,
}

impl<'a> Ctx<'a> {
    fn dels(&self, key: &str) -> impl Iterator<Item = &Event> + '_ {
        let own = self.keys.get(key).map(|k| k.dels.as_slice()).unwrap_or(&[]);
        own.iter().chain(self.flushes.iter()).map(move |&i| &self.ev[i])
    }

    /// Upper bound of the lease end from the resets known so far: a reset counts only if
    /// it was invoked while the hold may still have been alive.
    fn lease_up(&self, ep: &Episode) -> Duration {
        // A sure reset followed by another sure one (invoked after it answered) no longer
        // bounds the lease: the later one confirmed the hold and set the lease anew.
        let ev = self.ev;
        let live_sure = ep.sure_resets.iter().filter(|&&i| {
            !ep.sure_resets.iter().any(|&j| j != i && ev[j].invoke >= ev[i].eff_complete())
        });
        let mut rs: Vec<usize> = live_sure.chain(ep.poss_resets.iter()).cloned().collect();
        rs.sort_by_key(|&i| (self.ev[i].invoke, i));
        let up_of = |i: usize| {
            let e = &ev[i];
            e.eff_complete().saturating_add(e.ttl()).saturating_add(CLOCK_SLACK)
        };
        // Sure resets always applied; a possible one counts if it was invoked while the
        // hold may still have been alive.
        let mut up = Duration::ZERO;
        for &i in &rs {
            if ep.sure_resets.contains(&i) {
                up = up.max(up_of(i));
            }
        }
        for &i in &rs {
            if !ep.sure_resets.contains(&i) && ev[i].invoke <= up.min(ep.pos_cap) {
                up = up.max(up_of(i));
            }
        }
        up
    }

    /// Lower bound of the lease end: the latest instant the hold was confirmed alive, or
    /// if later the earliest end of the lease of any reset that may have been the last.
    fn lease_lo(&self, ep: &Episode) -> Duration {
        let ev = self.ev;
        let latest_sure_invoke = ep.sure_resets.iter().map(|&i| ev[i].invoke).max().unwrap();
        let mut min_last = INF;
        for &i in &ep.sure_resets {
            let e = &ev[i];
            // Superseded: another sure reset surely applied after it (invoked once
            // it had answered).
            let superseded = ep.sure_resets.iter().any(|&j| j != i && ev[j].invoke >= e.eff_complete());
            if !superseded {
                min_last = min_last.min(e.invoke.saturating_add(e.ttl()));
            }
        }
        for &i in &ep.poss_resets {
            let e = &ev[i];
            min_last = min_last.min(e.invoke.saturating_add(e.ttl()));
        }
        latest_sure_invoke.max(min_last).saturating_sub(CLOCK_SLACK)
    }

    /// When the hold of `ep` surely ended before operation `g` took effect (lease surely
    /// over, deleted, or a conflicting grant of another token happened in between):
    /// an instant by which it had ended.
    fn ended_before(&self, ep: &Episode, g: usize) -> Option<Duration> {
        let ge = &self.ev[g];
        let up = self.lease_up(ep).min(ep.pos_cap);
        if ge.invoke > up {
            return Some(up);
        }
        let start = self.ev[ep.grants[0]].complete;
        if let Some(d) = self.dels(&ep.key).find(|d| d.invoke >= start && d.eff_complete() < ge.invoke) {
            return Some(d.complete);
        }
        let ki = &self.keys[ep.key.as_str()];
        // Grants sorted by invoke: those invoked after `start` and completed before g.
        let from = ki.grants.partition_point(|&i| self.ev[i].invoke <= start);
        ki.grants[from..]
            .iter()
            .take_while(|&&i| self.ev[i].invoke < ge.invoke)
            .find(|&&i| {
                let o = &self.ev[i];
                let t = match o.res {
                    Res::Granted(t) => t,
                    _ => return false,
                };
                t != ep.token
                    && o.complete < ge.invoke
                    && conflicts(ep.mode, &ep.owner, grant_mode(o.op).unwrap(), &o.owner)
            })
            .map(|&i| {
                // A conflicting grant: either the hold had ended by then, or the two
                // overlapped. When the sure interval reaches past that grant the overlap
                // is what gets reported; otherwise the hold had ended by the grant.
                let o = &self.ev[i];
                if self.lease_lo(ep).min(ep.sure_cap) > o.complete {
                    up
                } else {
                    o.complete
                }
            })
    }
}

fn new_episode(ev: &[Event], i: usize, mode: Mode, token: i64, create_lo: Duration) -> Episode {
    let e = &ev[i];
    let (limit, permits) = match e.op {
        Op::SemAcquire { limit, permits } => (limit, permits),
        _ => (0, 0),
    };
    Episode {
        permits,
        limit,
        key: e.key.clone(),
        owner: e.owner.clone(),
        mode,
        token,
        grants: vec![i],
        sure_resets: vec![i],
        poss_resets: vec![],
        count_lo: 1,
        count_hi: Some(1),
        sure_cap: INF,
        pos_cap: INF,
        repeat: false,
        create_lo: create_lo.min(e.invoke),
        sure_start: e.complete,
        sure_end: INF,
        pos_start: e.invoke,
        pos_end: INF,
    }
}

/// Replays one owner's operations on one key (in invoke order) into episodes.
fn replay_stream(ctx: &Ctx, ops: &[usize], out: &mut Vec<Episode>, violations: &mut Vec<Violation>) {
    let ev = ctx.ev;
    let sequential = ops.windows(2).all(|w| ev[w[0]].eff_complete() <= ev[w[1]].invoke);
    let start_len = out.len();
    // Without sequential operations any unknown acquire or extend of the owner may have
    // reset an episode's lease, whenever it was invoked (if it could take effect after
    // the episode's first grant).
    let add_maybe_resets = |ep: &mut Episode| {
        if sequential {
            return;
        }
        let g0 = &ev[ep.grants[0]];
        for &j in ops {
            let e = &ev[j];
            let maybe_reset = (grant_mode(e.op) == Some(ep.mode) && e.res == Res::Unknown)
                || (extend_modes(e.op).contains(&ep.mode) && matches!(e.res, Res::Ok | Res::Unknown));
            if maybe_reset && e.eff_complete() > g0.invoke && !ep.poss_resets.contains(&j) {
                ep.poss_resets.push(j);
            }
        }
    };
    let mut open: HashMap<(Mode, i64), Episode> = HashMap::new();
    let mut closed: HashMap<(Mode, i64), usize> = HashMap::new(); // -> first grant of the closed episode
    let mut unknown_acq: HashMap<Mode, Duration> = HashMap::new(); // earliest unknown acquire per mode

    fn close(open: &mut HashMap<(Mode, i64), Episode>, closed: &mut HashMap<(Mode, i64), usize>, out: &mut Vec<Episode>, k: (Mode, i64)) {
        if let Some(ep) = open.remove(&k) {
            closed.insert(k, ep.grants[0]);
            out.push(ep);
        }
    }

    for &i in ops {
        let e = &ev[i];
        if sequential {
            // Episodes that surely ended before this op: its result says nothing of them.
            let ended: Vec<((Mode, i64), Duration)> = open
                .iter()
                .filter(|(kk, _)| !matches!(e.res, Res::Granted(t) if t == kk.1))
                .filter_map(|(kk, ep)| ctx.ended_before(ep, i).map(|by| (*kk, by)))
                .collect();
            for (kk, by) in ended {
                let ep = open.get_mut(&kk).unwrap();
                ep.sure_cap = ep.sure_cap.min(e.invoke);
                ep.pos_cap = ep.pos_cap.min(by);
                close(&mut open, &mut closed, out, kk);
            }
        }
        if let Some(m) = grant_mode(e.op) {
            match e.res {
                Res::Granted(t) => {
                    let k = (m, t);
                    if let Some(ep) = open.get(&k) {
                        if let Some(by) = ctx.ended_before(ep, i) {
                            let first = ep.grants[0];
                            let ep = open.get_mut(&k).unwrap();
                            ep.sure_cap = ep.sure_cap.min(e.invoke);
                            ep.pos_cap = ep.pos_cap.min(by);
                            close(&mut open, &mut closed, out, k);
                            violations.push(Violation {
                                kind: ViolationKind::RepeatedToken,
                                what: format!(
                                    "token {t} on key {} granted again to {} after its hold surely ended",
                                    e.key, e.owner
                                ),
                                events: vec![first, i],
                            });
                            let mut n = new_episode(ev, i, m, t, INF);
                            n.repeat = true;
                            add_maybe_resets(&mut n);
                            open.insert(k, n);
                        } else {
                            let ep = open.get_mut(&k).unwrap();
                            ep.grants.push(i);
                            ep.sure_resets.push(i);
                            ep.count_lo += 1;
                            ep.count_hi = ep.count_hi.map(|h| h + 1);
                        }
                    } else {
                        if sequential {
                            // One hold per mode at a time: a new token means the old hold
                            // of this mode ended before this grant took effect.
                            let old: Vec<(Mode, i64)> = open.keys().filter(|kk| kk.0 == m).cloned().collect();
                            for kk in old {
                                let ep = open.get_mut(&kk).unwrap();
                                ep.pos_cap = ep.pos_cap.min(e.complete);
                                close(&mut open, &mut closed, out, kk);
                            }
                        }
                        let mut n = new_episode(ev, i, m, t, unknown_acq.get(&m).copied().unwrap_or(INF));
                        if let Some(&first) = closed.get(&k) {
                            violations.push(Violation {
                                kind: ViolationKind::RepeatedToken,
                                what: format!(
                                    "token {t} on key {} granted again to {} after its hold had ended",
                                    e.key, e.owner
                                ),
                                events: vec![first, i],
                            });
                            n.repeat = true;
                        }
                        add_maybe_resets(&mut n);
                        open.insert(k, n);
                    }
                }
                Res::Unknown => {
                    unknown_acq.entry(m).or_insert(e.invoke);
                    if !sequential {
                        continue; // already among the episodes' possible resets
                    }
                    for ep in open.values_mut().filter(|ep| ep.mode == m) {
                        ep.poss_resets.push(i);
                        ep.count_hi = None;
                    }
                }
                _ => {}
            }
        } else if let Some(m) = release_mode(e.op) {
            if !sequential {
                continue; // handled coarsely after the replay
            }
            let keys: Vec<(Mode, i64)> = open.keys().filter(|kk| kk.0 == m).cloned().collect();
            for kk in keys {
                let ep = open.get_mut(&kk).unwrap();
                match e.res {
                    Res::Ok | Res::Unknown => {
                        ep.count_lo = (ep.count_lo - 1).max(0);
                        if ep.count_lo == 0 {
                            ep.sure_cap = ep.sure_cap.min(e.invoke);
                        }
                        if e.res == Res::Ok {
                            ep.count_hi = ep.count_hi.map(|h| h - 1);
                            if ep.count_hi == Some(0) {
                                ep.pos_cap = ep.pos_cap.min(e.complete);
                                close(&mut open, &mut closed, out, kk);
                            }
                        }
                    }
                    Res::NotHeld => {
                        ep.sure_cap = ep.sure_cap.min(e.invoke);
                        ep.pos_cap = ep.pos_cap.min(e.complete);
                        close(&mut open, &mut closed, out, kk);
                    }
                    _ => {}
                }
            }
        } else if !extend_modes(e.op).is_empty() {
            let modes = extend_modes(e.op);
            let keys: Vec<(Mode, i64)> = open.keys().filter(|kk| modes.contains(&kk.0)).cloned().collect();
            if !sequential {
                continue; // already among the episodes' possible resets
            }
            // An acknowledged extend proves a hold of this owner was alive; it is surely
            // this episode's only when the owner has just one open episode.
            let single = keys.len() == 1;
            for kk in keys {
                let ep = open.get_mut(&kk).unwrap();
                match e.res {
                    Res::Ok if single => ep.sure_resets.push(i),
                    Res::Ok | Res::Unknown => ep.poss_resets.push(i),
                    Res::NotHeld => {
                        ep.sure_cap = ep.sure_cap.min(e.invoke);
                        ep.pos_cap = ep.pos_cap.min(e.complete);
                        close(&mut open, &mut closed, out, kk);
                    }
                    _ => {}
                }
            }
        }
    }
    let rest: Vec<(Mode, i64)> = open.keys().cloned().collect();
    for kk in rest {
        close(&mut open, &mut closed, out, kk);
    }
    if !sequential {
        // Coarse: any release of the mode that may take effect after the first grant
        // may be the one that ends the hold.
        for ep in &mut out[start_len..] {
            let g0 = &ev[ep.grants[0]];
            for &i in ops {
                let e = &ev[i];
                if release_mode(e.op) == Some(ep.mode)
                    && matches!(e.res, Res::Ok | Res::Unknown | Res::NotHeld)
                    && e.eff_complete() > g0.invoke
                {
                    ep.sure_cap = ep.sure_cap.min(e.invoke);
                }
                if extend_modes(e.op).contains(&ep.mode) && e.res == Res::NotHeld && e.complete > g0.invoke {
                    ep.sure_cap = ep.sure_cap.min(e.invoke);
                }
            }
        }
    }
}

/// Computes the sure and possible intervals of an episode.
fn bound(ctx: &Ctx, ep: &mut Episode) {
    let ev = ctx.ev;
    let g0 = &ev[ep.grants[0]];
    ep.sure_start = g0.complete;
    ep.pos_start = g0.invoke;

    let lease_lo = ctx.lease_lo(ep);
    let mut sure_end = lease_lo.min(ep.sure_cap);
    let mut pos_end = ctx.lease_up(ep).min(ep.pos_cap);
    for d in ctx.dels(&ep.key) {
        if d.eff_complete() > g0.invoke {
            sure_end = sure_end.min(d.invoke);
        }
        if d.invoke >= g0.complete {
            pos_end = pos_end.min(d.eff_complete());
        }
    }
    ep.sure_end = sure_end;
    ep.pos_end = pos_end;
}

// ---------------------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------------------

/// Checks a whole history; returns every violation found (empty when clean).
pub fn check(ev: &[Event]) -> Vec<Violation> {
    let mut violations = Vec::new();

    // Index.
    let mut keys: HashMap<&str, KeyInfo> = HashMap::new();
    let mut flushes = Vec::new();
    let mut streams: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, e) in ev.iter().enumerate() {
        match e.op {
            Op::FlushAll => flushes.push(i),
            Op::Del => keys.entry(&e.key).or_insert_with(|| KeyInfo { grants: vec![], dels: vec![] }).dels.push(i),
            Op::FenceWrite => {}
            _ => {
                let ki = keys.entry(&e.key).or_insert_with(|| KeyInfo { grants: vec![], dels: vec![] });
                if grant_mode(e.op).is_some() && matches!(e.res, Res::Granted(_)) {
                    ki.grants.push(i);
                }
                streams.entry((&e.key, &e.owner)).or_default().push(i);
            }
        }
    }
    let order = |a: &usize, b: &usize| (ev[*a].invoke, ev[*a].complete, *a).cmp(&(ev[*b].invoke, ev[*b].complete, *b));
    for ki in keys.values_mut() {
        ki.grants.sort_by(order);
    }
    let ctx = Ctx { ev, keys, flushes };

    // Episodes.
    let mut stream_keys: Vec<(&str, &str)> = streams.keys().cloned().collect();
    stream_keys.sort();
    let mut episodes = Vec::new();
    for sk in &stream_keys {
        let ops = streams.get_mut(sk).unwrap();
        ops.sort_by(order);
        replay_stream(&ctx, ops, &mut episodes, &mut violations);
    }
    for ep in &mut episodes {
        bound(&ctx, ep);
    }
    let mut by_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (n, ep) in episodes.iter().enumerate() {
        by_key.entry(ep.key.as_str()).or_default().push(n);
    }
    let mut key_names: Vec<&str> = by_key.keys().cloned().collect();
    key_names.sort();

    for key in &key_names {
        let eps = &by_key[key];

        // Repeated tokens across holders.
        let mut dup: HashSet<usize> = HashSet::new();
        let mut by_token: HashMap<i64, Vec<usize>> = HashMap::new();
        for &n in eps {
            by_token.entry(episodes[n].token).or_default().push(n);
        }
        let mut tokens: Vec<&i64> = by_token.keys().collect();
        tokens.sort();
        for t in tokens {
            let list = &by_token[t];
            let mut list = list.clone();
            list.sort_by_key(|&n| (episodes[n].sure_start, n));
            let first = list[0];
            for &n in &list[1..] {
                let (a, b) = (&episodes[first], &episodes[n]);
                if a.owner != b.owner || a.mode != b.mode {
                    dup.insert(n);
                    violations.push(Violation {
                        kind: ViolationKind::RepeatedToken,
                        what: format!(
                            "token {t} on key {key} granted to {} ({:?}) and to {} ({:?})",
                            a.owner, a.mode, b.owner, b.mode
                        ),
                        events: vec![a.grants[0], b.grants[0]],
                    });
                }
            }
        }

        // Overlapping sure intervals of conflicting holds (sweep by start).
        let mut live: Vec<usize> = eps.iter().cloned().filter(|&n| episodes[n].sure_end > episodes[n].sure_start).collect();
        live.sort_by_key(|&n| (episodes[n].sure_start, n));
        let mut active: Vec<usize> = Vec::new();
        for &n in &live {
            let b = &episodes[n];
            active.retain(|&a| episodes[a].sure_end > b.sure_start);
            for &a in &active {
                let a = &episodes[a];
                if a.token == b.token || !conflicts(a.mode, &a.owner, b.mode, &b.owner) {
                    continue;
                }
                let kind = match (a.mode, b.mode) {
                    (Mode::Sem, Mode::Sem) => ViolationKind::ReentryToken,
                    (Mode::Read | Mode::Write, Mode::Read | Mode::Write) => ViolationKind::RwOverlap,
                    _ => ViolationKind::Overlap,
                };
                if kind == ViolationKind::ReentryToken {
                    violations.push(Violation {
                        kind,
                        what: format!(
                            "key {key}: {} surely held token {} during [{:.6}s, {:.6}s), yet its SEM.ACQUIRE answered at {:.6}s returned token {} (a reentry keeps its token)",
                            a.owner,
                            a.token,
                            a.sure_start.as_secs_f64(),
                            secs(a.sure_end),
                            b.sure_start.as_secs_f64(),
                            b.token
                        ),
                        events: vec![a.grants[0], b.grants[0]],
                    });
                    continue;
                }
                violations.push(Violation {
                    kind,
                    what: format!(
                        "key {key}: {} ({:?}, token {}) surely held it during [{:.6}s, {:.6}s) and {} ({:?}, token {}) during [{:.6}s, {:.6}s)",
                        a.owner,
                        a.mode,
                        a.token,
                        a.sure_start.as_secs_f64(),
                        secs(a.sure_end),
                        b.owner,
                        b.mode,
                        b.token,
                        b.sure_start.as_secs_f64(),
                        secs(b.sure_end)
                    ),
                    events: vec![a.grants[0], b.grants[0]],
                });
            }
            active.push(n);
        }

        // Semaphores: the permits of the holds surely alive at one instant, against the
        // limit; and one limit for holds alive at once. The sum is largest at the start of
        // some sure interval, so it is taken there (sweep by start).
        let mut sems: Vec<usize> = live.iter().cloned().filter(|&n| episodes[n].mode == Mode::Sem).collect();
        sems.sort_by_key(|&n| (episodes[n].sure_start, n));
        let mut active: Vec<usize> = Vec::new();
        for &n in &sems {
            let b = &episodes[n];
            active.retain(|&a| episodes[a].sure_end > b.sure_start);
            // Two holds alive at one instant: the later grant found the semaphore held,
            // so bound to the earlier one's limit.
            if let Some(&a) = active.iter().find(|&&a| episodes[a].limit != b.limit) {
                let a = &episodes[a];
                violations.push(Violation {
                    kind: ViolationKind::SemLimitMismatch,
                    what: format!(
                        "key {key}: {} (token {}, limit {}) and {} (token {}, limit {}) surely held it at {:.6}s",
                        a.owner,
                        a.token,
                        a.limit,
                        b.owner,
                        b.token,
                        b.limit,
                        b.sure_start.as_secs_f64()
                    ),
                    events: vec![a.grants[0], b.grants[0]],
                });
            }
            active.push(n);
            // Per owner once: two holds of one owner at once are a `ReentryToken` already.
            let mut per_owner: HashMap<&str, u64> = HashMap::new();
            for &a in &active {
                let p = per_owner.entry(episodes[a].owner.as_str()).or_default();
                *p = (*p).max(episodes[a].permits);
            }
            let held: u64 = per_owner.values().sum();
            let limit = active.iter().map(|&a| episodes[a].limit).max().unwrap_or(0);
            if held > limit {
                let mut holders: Vec<usize> = active.clone();
                holders.sort_by_key(|&a| (episodes[a].sure_start, a));
                violations.push(Violation {
                    kind: ViolationKind::SemOverLimit,
                    what: format!(
                        "key {key}: {held} permits of a semaphore of limit {limit} surely held at {:.6}s, by {}",
                        b.sure_start.as_secs_f64(),
                        holders
                            .iter()
                            .map(|&a| {
                                let a = &episodes[a];
                                format!("{} ({} from token {}, until {}s)", a.owner, a.permits, a.token, secs(a.sure_end))
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    events: holders.iter().map(|&a| episodes[a].grants[0]).collect(),
                });
            }
        }

        // Real-time token order of fresh grants.
        let mut fresh: Vec<usize> = eps.iter().cloned().filter(|&n| !episodes[n].repeat && !dup.contains(&n)).collect();
        fresh.sort_by_key(|&n| (episodes[n].sure_start, n));
        let mut by_lo = fresh.clone();
        by_lo.sort_by_key(|&n| (episodes[n].create_lo, n));
        let mut p = 0;
        let mut best: Option<usize> = None; // highest token among those completed so far
        for &n in &by_lo {
            let b = &episodes[n];
            while p < fresh.len() && episodes[fresh[p]].sure_start < b.create_lo {
                let c = fresh[p];
                if best.is_none_or(|x| episodes[c].token > episodes[x].token) {
                    best = Some(c);
                }
                p += 1;
            }
            if let Some(x) = best {
                let a = &episodes[x];
                if a.token > b.token {
                    violations.push(Violation {
                        kind: ViolationKind::TokenOrder,
                        what: format!(
                            "key {key}: grant of token {} to {} completed at {:.6}s, before the grant of the smaller token {} to {} was invoked at {:.6}s",
                            a.token,
                            a.owner,
                            a.sure_start.as_secs_f64(),
                            b.token,
                            b.owner,
                            b.create_lo.as_secs_f64()
                        ),
                        events: vec![a.grants[0], b.grants[0]],
                    });
                }
            }
        }
    }

    // Acknowledged releases/extends by non-holders.
    let mut eps_of: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (n, ep) in episodes.iter().enumerate() {
        eps_of.entry((ep.key.as_str(), ep.owner.as_str())).or_default().push(n);
    }
    for sk in &stream_keys {
        let ops = &streams[sk];
        let eps = eps_of.get(sk).map(|v| v.as_slice()).unwrap_or(&[]);
        // An unknown acquire may have been granted at any time after its invoke.
        let mut first_unknown: HashMap<Mode, Duration> = HashMap::new();
        for &j in ops {
            if let (Some(m), Res::Unknown) = (grant_mode(ev[j].op), &ev[j].res) {
                let t = first_unknown.entry(m).or_insert(ev[j].invoke);
                *t = (*t).min(ev[j].invoke);
            }
        }
        for &i in ops {
            let e = &ev[i];
            if e.res != Res::Ok {
                continue;
            }
            let modes: Vec<Mode> = match release_mode(e.op) {
                Some(m) => vec![m],
                None => extend_modes(e.op).to_vec(),
            };
            if modes.is_empty() {
                continue;
            }
            let maybe_held = eps.iter().any(|&n| {
                let ep = &episodes[n];
                modes.contains(&ep.mode) && ep.pos_start <= e.complete && ep.pos_end >= e.invoke
            }) || modes.iter().any(|m| first_unknown.get(m).is_some_and(|&t| t <= e.complete));
            if !maybe_held {
                let near: Vec<usize> = eps
                    .iter()
                    .filter(|&&n| modes.contains(&episodes[n].mode) && episodes[n].pos_start <= e.complete)
                    .max_by_key(|&&n| episodes[n].pos_start)
                    .map(|&n| episodes[n].grants.clone())
                    .unwrap_or_default();
                let mut involved = vec![i];
                involved.extend(near.iter().take(3));
                violations.push(Violation {
                    kind: ViolationKind::NonHolderAck,
                    what: format!("{} answered 1, but {} surely held no {:?} hold on {} then", op_name(e.op), e.owner, modes, e.key),
                    events: involved,
                });
            }
        }
    }

    // Fenced writes in real-time order.
    let mut fence: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in ev.iter().enumerate() {
        if e.op == Op::FenceWrite && e.res == Res::Ok {
            fence.entry(&e.key).or_default().push(i);
        }
    }
    let mut fkeys: Vec<&str> = fence.keys().cloned().collect();
    fkeys.sort();
    for key in fkeys {
        let ws = &fence[key];
        let mut by_complete = ws.clone();
        by_complete.sort_by_key(|&i| (ev[i].complete, i));
        let mut by_invoke = ws.clone();
        by_invoke.sort_by_key(|&i| (ev[i].invoke, i));
        let mut p = 0;
        let mut best: Option<usize> = None;
        for &b in &by_invoke {
            while p < by_complete.len() && ev[by_complete[p]].complete < ev[b].invoke {
                let c = by_complete[p];
                if best.is_none_or(|x| ev[c].token > ev[x].token) {
                    best = Some(c);
                }
                p += 1;
            }
            if let Some(a) = best {
                if ev[a].token > ev[b].token {
                    violations.push(Violation {
                        kind: ViolationKind::StaleFencedWrite,
                        what: format!(
                            "resource {key}: write with token {} by {} accepted after a write with token {} by {} had been accepted",
                            ev[b].token, ev[b].owner, ev[a].token, ev[a].owner
                        ),
                        events: vec![a, b],
                    });
                }
            }
        }
    }
    violations
}

/// The resource's own acceptance order (e.g. a list appended in the same script as its
/// `FENCE.CHECK`): every token must be at least the highest accepted before it.
pub fn check_fence_log(resource: &str, accepted: &[i64]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut high: Option<(usize, i64)> = None;
    for (n, &t) in accepted.iter().enumerate() {
        if let Some((hn, h)) = high {
            if t < h {
                out.push(Violation {
                    kind: ViolationKind::StaleFencedWrite,
                    what: format!(
                        "resource {resource}: write #{n} with token {t} accepted after write #{hn} with token {h}"
                    ),
                    events: vec![],
                });
            }
        }
        if high.is_none_or(|(_, h)| t > h) {
            high = Some((n, t));
        }
    }
    out
}

/// Readable report of violations with the events involved (at most `max` violations).
pub fn render(ev: &[Event], violations: &[Violation], max: usize) -> String {
    let mut s = format!("{} violation(s) in a history of {} events\n", violations.len(), ev.len());
    for v in violations.iter().take(max) {
        s.push_str(&format!("- {v}\n"));
        for &i in &v.events {
            s.push_str(&format!("    #{i} {}\n", ev[i]));
        }
        // The owners' other operations on the key around then, as a minimal history.
        if let (Some(lo), Some(hi)) = (
            v.events.iter().map(|&i| ev[i].invoke).min(),
            v.events.iter().map(|&i| ev[i].complete).max(),
        ) {
            let owners: HashSet<&str> = v.events.iter().map(|&i| ev[i].owner.as_str()).collect();
            let keys: HashSet<&str> = v.events.iter().map(|&i| ev[i].key.as_str()).collect();
            let ctx: Vec<usize> = (0..ev.len())
                .filter(|i| !v.events.contains(i))
                .filter(|&i| keys.contains(ev[i].key.as_str()) || ev[i].op == Op::FlushAll)
                .filter(|&i| owners.contains(ev[i].owner.as_str()) || ev[i].owner.is_empty())
                .filter(|&i| ev[i].complete >= lo.saturating_sub(Duration::from_secs(2)) && ev[i].invoke <= hi)
                .collect();
            for &i in ctx.iter().rev().take(12).collect::<Vec<_>>().iter().rev() {
                s.push_str(&format!("      (context) #{i} {}\n", ev[*i]));
            }
        }
    }
    if violations.len() > max {
        s.push_str(&format!("... and {} more\n", violations.len() - max));
    }
    s
}

/// Panics with a readable report if `check(ev)` finds anything.
#[track_caller]
pub fn assert_clean(ev: &[Event], what: &str) {
    let v = check(ev);
    if !v.is_empty() {
        panic!("{what}: the history checker found violations:\n{}", render(ev, &v, 10));
    }
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Release => "LOCK.RELEASE",
        Op::Extend => "LOCK.EXTEND",
        Op::RUnlock => "RWLOCK.RUNLOCK",
        Op::WUnlock => "RWLOCK.WUNLOCK",
        Op::RwExtend => "RWLOCK.EXTEND",
        Op::SemRelease => "SEM.RELEASE",
        Op::SemExtend => "SEM.EXTEND",
        _ => "op",
    }
}

fn secs(d: Duration) -> String {
    if d == INF {
        "inf".into()
    } else {
        format!("{:.6}", d.as_secs_f64())
    }
}
