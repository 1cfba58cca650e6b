//! The contenders, as a client would use them.
//!
//! - fencelock: `LOCK.ACQUIRE` (with `WAIT` where a client waits) / `LOCK.RELEASE`;
//!   `RWLOCK.*` for the read-write figure.
//! - The classic recipe: `SET key owner NX PX ttl`, released by a compare-and-delete
//!   Lua script sent with `EVALSHA`; waiting is client-side retry, either every 1 ms or
//!   after a random 50-250 ms (what Redlock clients do by default).
//! - A Redisson-style reentrant hash lock in Lua (benches/lua/reentrant_*.lua), whose
//!   waiters subscribe to the lock's channel and retry on an unlock message or when the
//!   lease they were told about ends; and its read-write sibling.
//! - The floor: plain `SET` / `DEL` of the same keys (no lock at all).
//!
//! Every reply is checked: a contender that answers something a correct lock would not
//! (a fresh lock refused, a held lock not released, ...) stops the benchmark.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redis::{Cmd, Value};

use crate::support::Raw;
use crate::util::{exec, load_script, show};

pub const CLASSIC_RELEASE: &str = include_str!("../lua/classic_release.lua");
pub const REENTRANT_LOCK: &str = include_str!("../lua/reentrant_lock.lua");
pub const REENTRANT_UNLOCK: &str = include_str!("../lua/reentrant_unlock.lua");
pub const RW_READ_LOCK: &str = include_str!("../lua/rw_read_lock.lua");
pub const RW_WRITE_LOCK: &str = include_str!("../lua/rw_write_lock.lua");
pub const RW_READ_UNLOCK: &str = include_str!("../lua/rw_read_unlock.lua");
pub const RW_WRITE_UNLOCK: &str = include_str!("../lua/rw_write_unlock.lua");

/// The SHA1s of the Lua scripts, loaded into one server.
#[derive(Clone, Debug)]
pub struct Scripts {
    pub cad: String,
    pub lock: String,
    pub unlock: String,
    pub rlock: String,
    pub wlock: String,
    pub runlock: String,
    pub wunlock: String,
}

impl Scripts {
    pub fn load(con: &mut redis::Connection) -> Scripts {
        Scripts {
            cad: load_script(con, CLASSIC_RELEASE),
            lock: load_script(con, REENTRANT_LOCK),
            unlock: load_script(con, REENTRANT_UNLOCK),
            rlock: load_script(con, RW_READ_LOCK),
            wlock: load_script(con, RW_WRITE_LOCK),
            runlock: load_script(con, RW_READ_UNLOCK),
            wunlock: load_script(con, RW_WRITE_UNLOCK),
        }
    }
}

/// The pub/sub channel of a Redisson-style lock.
pub fn channel_of(key: &str) -> String {
    format!("redisson_lock__channel:{{{key}}}")
}

#[track_caller]
fn wrong(what: &str, cmd: &Cmd, v: &Value) -> ! {
    panic!("WRONG RESULT from {what}: `{}` answered {v:?}", show(cmd))
}

// ---- figure 1: one-shot acquire and release -------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OneShot {
    Fence,
    SetNx,
    Reentrant,
    Floor,
}

impl OneShot {
    pub const ALL: [OneShot; 4] = [OneShot::Fence, OneShot::SetNx, OneShot::Reentrant, OneShot::Floor];

    pub fn name(self) -> &'static str {
        match self {
            OneShot::Fence => "fencelock (LOCK.ACQUIRE / LOCK.RELEASE)",
            OneShot::SetNx => "SET NX PX + EVALSHA compare-and-delete",
            OneShot::Reentrant => "Redisson-style hash lock (EVALSHA)",
            OneShot::Floor => "floor: plain SET / DEL",
        }
    }

    pub fn acquire(self, key: &str, owner: &str, ttl: u64, s: &Scripts) -> Cmd {
        let mut c;
        match self {
            OneShot::Fence => {
                c = redis::cmd("LOCK.ACQUIRE");
                c.arg(key).arg(owner).arg(ttl);
            }
            OneShot::SetNx => {
                c = redis::cmd("SET");
                c.arg(key).arg(owner).arg("NX").arg("PX").arg(ttl);
            }
            OneShot::Reentrant => {
                c = redis::cmd("EVALSHA");
                c.arg(&s.lock).arg(1).arg(key).arg(ttl).arg(owner);
            }
            OneShot::Floor => {
                c = redis::cmd("SET");
                c.arg(key).arg(owner);
            }
        }
        c
    }

    /// Checks the reply to an acquire of a lock nobody holds: it must be granted.
    pub fn check_acquire(self, cmd: &Cmd, v: &Value) {
        let ok = match self {
            OneShot::Fence => matches!(v, Value::Int(t) if *t > 0),
            OneShot::SetNx | OneShot::Floor => matches!(v, Value::Okay),
            OneShot::Reentrant => matches!(v, Value::Nil),
        };
        if !ok {
            wrong(self.name(), cmd, v);
        }
    }

    pub fn release(self, key: &str, owner: &str, ttl: u64, s: &Scripts) -> Cmd {
        let mut c;
        match self {
            OneShot::Fence => {
                c = redis::cmd("LOCK.RELEASE");
                c.arg(key).arg(owner);
            }
            OneShot::SetNx => {
                c = redis::cmd("EVALSHA");
                c.arg(&s.cad).arg(1).arg(key).arg(owner);
            }
            OneShot::Reentrant => {
                c = redis::cmd("EVALSHA");
                c.arg(&s.unlock).arg(2).arg(key).arg(channel_of(key)).arg(0).arg(ttl).arg(owner);
            }
            OneShot::Floor => {
                c = redis::cmd("DEL");
                c.arg(key);
            }
        }
        c
    }

    /// Checks the reply to the release of a lock the caller holds: it must be released.
    pub fn check_release(self, cmd: &Cmd, v: &Value) {
        if !matches!(v, Value::Int(1)) {
            wrong(self.name(), cmd, v);
        }
    }
}

// ---- figures 2 and 3: locks with waiting ----------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    Fence,
    Poll1ms,
    Redlock,
    Reentrant,
}

impl Waiting {
    pub const ALL: [Waiting; 4] = [Waiting::Fence, Waiting::Poll1ms, Waiting::Redlock, Waiting::Reentrant];

    pub fn name(self) -> &'static str {
        match self {
            Waiting::Fence => "fencelock (LOCK.ACQUIRE ... WAIT)",
            Waiting::Poll1ms => "SET NX PX, retry every 1 ms",
            Waiting::Redlock => "SET NX PX, retry after 50-250 ms (Redlock default)",
            Waiting::Reentrant => "Redisson-style hash lock + pub/sub",
        }
    }
}

/// Set once, by a waiter, when its first attempt was refused: proof that it waits.
pub type FailSignal = Arc<(Mutex<Option<Instant>>, Condvar)>;

pub fn fail_signal() -> FailSignal {
    Arc::new((Mutex::new(None), Condvar::new()))
}

/// Waits until `sig` is set or `until`; returns when it was set.
pub fn await_signal(sig: &FailSignal, until: Instant) -> Option<Instant> {
    let (m, c) = &**sig;
    let mut g = m.lock().unwrap();
    loop {
        if let Some(t) = *g {
            return Some(t);
        }
        let now = Instant::now();
        if now >= until {
            return None;
        }
        g = c.wait_timeout(g, until - now).unwrap().0;
    }
}

pub struct Grant {
    /// When the reply that granted the lock was read.
    pub at: Instant,
    /// The fencing token, for fencelock.
    pub token: Option<i64>,
}

/// One client of a lock with waiting: its own connection (and, for the Redisson-style
/// lock, its own subscriber connection).
pub struct WaitClient {
    kind: Waiting,
    con: redis::Connection,
    sub: Option<Raw>,
    owner: String,
    ttl: u64,
    scripts: Scripts,
    rng: StdRng,
    /// Commands and messages are counted while now < count_until.
    pub count_until: Instant,
    pub cmds: u64,
    pub msgs: u64,
    pub on_fail: Option<FailSignal>,
}

impl WaitClient {
    pub fn new(kind: Waiting, url: &str, port: u16, owner: String, ttl: u64, scripts: &Scripts) -> WaitClient {
        WaitClient {
            kind,
            con: crate::util::connect(url),
            sub: (kind == Waiting::Reentrant)
                .then(|| Raw::connect(port, Duration::from_secs(60)).expect("connect the subscriber")),
            owner,
            ttl,
            scripts: scripts.clone(),
            rng: StdRng::from_entropy(),
            count_until: Instant::now() + Duration::from_secs(3600),
            cmds: 0,
            msgs: 0,
            on_fail: None,
        }
    }

    pub fn con(&mut self) -> &mut redis::Connection {
        &mut self.con
    }

    pub fn set_ttl(&mut self, ttl: u64) {
        self.ttl = ttl;
    }

    fn counted(&mut self) {
        if Instant::now() < self.count_until {
            self.cmds += 1;
        }
    }

    fn message(&mut self) {
        if Instant::now() < self.count_until {
            self.msgs += 1;
        }
    }

    fn failed(&mut self) {
        if let Some(sig) = &self.on_fail {
            let (m, c) = &**sig;
            let mut g = m.lock().unwrap();
            if g.is_none() {
                *g = Some(Instant::now());
                c.notify_all();
            }
        }
    }

    /// Takes the lock, waiting the contender's way; None if `stop` came first.
    pub fn acquire(&mut self, key: &str, stop: Instant) -> Option<Grant> {
        match self.kind {
            Waiting::Fence => self.acquire_fence(key, stop),
            Waiting::Poll1ms | Waiting::Redlock => self.acquire_poll(key, stop),
            Waiting::Reentrant => self.acquire_reentrant(key, stop),
        }
    }

    fn acquire_fence(&mut self, key: &str, stop: Instant) -> Option<Grant> {
        loop {
            // The server-side wait outlasts the round by 2 s: waiters still queued when
            // the round ends are served by the holders leaving, never left hanging.
            let wait_ms = stop.saturating_duration_since(Instant::now()).as_millis() as u64 + 2000;
            let mut c = redis::cmd("LOCK.ACQUIRE");
            c.arg(key).arg(&self.owner).arg(self.ttl).arg("WAIT").arg(wait_ms);
            self.counted();
            let v = exec(&mut self.con, &c);
            match v {
                Value::Int(t) if t > 0 => return Some(Grant { at: Instant::now(), token: Some(t) }),
                Value::Nil => {
                    self.failed();
                    if Instant::now() >= stop {
                        return None;
                    }
                }
                other => wrong(Waiting::Fence.name(), &c, &other),
            }
        }
    }

    fn acquire_poll(&mut self, key: &str, stop: Instant) -> Option<Grant> {
        loop {
            let mut c = redis::cmd("SET");
            c.arg(key).arg(&self.owner).arg("NX").arg("PX").arg(self.ttl);
            self.counted();
            match exec(&mut self.con, &c) {
                Value::Okay => return Some(Grant { at: Instant::now(), token: None }),
                Value::Nil => {}
                other => wrong(self.kind.name(), &c, &other),
            }
            self.failed();
            let now = Instant::now();
            if now >= stop {
                return None;
            }
            let delay = match self.kind {
                Waiting::Poll1ms => Duration::from_millis(1),
                _ => Duration::from_millis(self.rng.gen_range(50..=250)),
            };
            if now + delay >= stop {
                std::thread::sleep(stop - now);
                return None;
            }
            std::thread::sleep(delay);
        }
    }

    /// One try of the Redisson-style lock: Ok when granted, Err(pttl) when held.
    fn try_reentrant(&mut self, key: &str) -> Result<Grant, i64> {
        let mut c = redis::cmd("EVALSHA");
        c.arg(&self.scripts.lock).arg(1).arg(key).arg(self.ttl).arg(&self.owner);
        self.counted();
        match exec(&mut self.con, &c) {
            Value::Nil => Ok(Grant { at: Instant::now(), token: None }),
            Value::Int(pttl) => Err(pttl),
            other => wrong(Waiting::Reentrant.name(), &c, &other),
        }
    }

    /// Redisson's RLock.lock(): try; if held, subscribe to the lock's channel, then
    /// loop { try; wait for an unlock message at most the remaining lease }, and
    /// unsubscribe once granted.
    fn acquire_reentrant(&mut self, key: &str, stop: Instant) -> Option<Grant> {
        if let Ok(g) = self.try_reentrant(key) {
            return Some(g);
        }
        self.failed();
        let channel = channel_of(key);
        self.counted();
        let sub = self.sub.as_mut().unwrap();
        sub.send(&["SUBSCRIBE", channel.as_str()]).expect("write to the subscriber connection");
        let f = sub.read().expect("read a frame from the subscriber connection");
        if f.push_kind().as_deref() != Some("subscribe") {
            panic!("SUBSCRIBE {channel} answered {f:?}");
        }
        let result = loop {
            match self.try_reentrant(key) {
                Ok(g) => break Some(g),
                Err(pttl) => {
                    let now = Instant::now();
                    if now >= stop {
                        break None;
                    }
                    let wait = Duration::from_millis(pttl.max(0) as u64).min(stop - now);
                    if wait.is_zero() {
                        continue;
                    }
                    match self.sub.as_mut().unwrap().read_within(wait).expect("subscriber connection") {
                        None => {}
                        Some(f) if f.push_kind().as_deref() == Some("message") => self.message(),
                        Some(f) => panic!("unexpected frame on the subscriber connection: {f:?}"),
                    }
                }
            }
        };
        self.counted();
        self.sub.as_mut().unwrap().send(&["UNSUBSCRIBE", channel.as_str()]).expect("write to the subscriber connection");
        loop {
            let f = self.sub.as_mut().unwrap().read().expect("read a frame from the subscriber connection");
            match f.push_kind().as_deref() {
                Some("unsubscribe") => break,
                Some("message") => self.message(),
                _ => panic!("UNSUBSCRIBE {channel} answered {f:?}"),
            }
        }
        result
    }

    /// Releases a lock this client holds; anything but "released" is a wrong result.
    pub fn release(&mut self, key: &str) {
        let mut c;
        match self.kind {
            Waiting::Fence => {
                c = redis::cmd("LOCK.RELEASE");
                c.arg(key).arg(&self.owner);
            }
            Waiting::Poll1ms | Waiting::Redlock => {
                c = redis::cmd("EVALSHA");
                c.arg(&self.scripts.cad).arg(1).arg(key).arg(&self.owner);
            }
            Waiting::Reentrant => {
                c = redis::cmd("EVALSHA");
                c.arg(&self.scripts.unlock).arg(2).arg(key).arg(channel_of(key)).arg(0).arg(self.ttl).arg(&self.owner);
            }
        }
        self.counted();
        let v = exec(&mut self.con, &c);
        if !matches!(v, Value::Int(1)) {
            wrong(self.kind.name(), &c, &v);
        }
    }
}

// ---- figure 5: read-write locks ---------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RwKind {
    Fence,
    Lua,
}

impl RwKind {
    pub const ALL: [RwKind; 2] = [RwKind::Fence, RwKind::Lua];

    pub fn name(self) -> &'static str {
        match self {
            RwKind::Fence => "fencelock (RWLOCK.* ... WAIT)",
            RwKind::Lua => "Redisson-style hash read-write lock (Lua, 1 ms retry)",
        }
    }
}

pub struct RwClient {
    kind: RwKind,
    con: redis::Connection,
    owner: String,
    write_field: String,
    ttl: u64,
    scripts: Scripts,
    pub count_until: Instant,
    pub cmds: u64,
}

impl RwClient {
    pub fn new(kind: RwKind, url: &str, owner: String, ttl: u64, scripts: &Scripts) -> RwClient {
        RwClient {
            kind,
            con: crate::util::connect(url),
            write_field: format!("{owner}:write"),
            owner,
            ttl,
            scripts: scripts.clone(),
            count_until: Instant::now() + Duration::from_secs(3600),
            cmds: 0,
        }
    }

    fn counted(&mut self) {
        if Instant::now() < self.count_until {
            self.cmds += 1;
        }
    }

    /// Takes the read (or write) lock, waiting; None if `stop` came first.
    pub fn lock(&mut self, key: &str, write: bool, stop: Instant) -> Option<Grant> {
        loop {
            let mut c;
            match self.kind {
                RwKind::Fence => {
                    c = redis::cmd(if write { "RWLOCK.WLOCK" } else { "RWLOCK.RLOCK" });
                    let wait_ms = stop.saturating_duration_since(Instant::now()).as_millis() as u64 + 2000;
                    c.arg(key).arg(&self.owner).arg(self.ttl).arg("WAIT").arg(wait_ms);
                }
                RwKind::Lua if write => {
                    c = redis::cmd("EVALSHA");
                    c.arg(&self.scripts.wlock).arg(1).arg(key).arg(self.ttl).arg(&self.write_field);
                }
                RwKind::Lua => {
                    c = redis::cmd("EVALSHA");
                    c.arg(&self.scripts.rlock).arg(1).arg(key).arg(self.ttl).arg(&self.owner).arg(&self.write_field);
                }
            }
            self.counted();
            let v = exec(&mut self.con, &c);
            match (self.kind, &v) {
                (RwKind::Fence, Value::Int(t)) if *t > 0 => return Some(Grant { at: Instant::now(), token: Some(*t) }),
                (RwKind::Fence, Value::Nil) => {}
                (RwKind::Lua, Value::Nil) => return Some(Grant { at: Instant::now(), token: None }),
                (RwKind::Lua, Value::Int(_)) => {}
                _ => wrong(self.kind.name(), &c, &v),
            }
            let now = Instant::now();
            if now >= stop {
                return None;
            }
            if self.kind == RwKind::Lua {
                std::thread::sleep(Duration::from_millis(1).min(stop - now));
            }
        }
    }

    pub fn unlock(&mut self, key: &str, write: bool) {
        let mut c;
        match self.kind {
            RwKind::Fence => {
                c = redis::cmd(if write { "RWLOCK.WUNLOCK" } else { "RWLOCK.RUNLOCK" });
                c.arg(key).arg(&self.owner);
            }
            RwKind::Lua if write => {
                c = redis::cmd("EVALSHA");
                c.arg(&self.scripts.wunlock).arg(2).arg(key).arg(channel_of(key)).arg(0).arg(self.ttl).arg(&self.write_field);
            }
            RwKind::Lua => {
                c = redis::cmd("EVALSHA");
                c.arg(&self.scripts.runlock).arg(2).arg(key).arg(channel_of(key)).arg(0).arg(&self.owner);
            }
        }
        self.counted();
        let v = exec(&mut self.con, &c);
        if !matches!(v, Value::Int(1)) {
            wrong(self.kind.name(), &c, &v);
        }
    }
}
