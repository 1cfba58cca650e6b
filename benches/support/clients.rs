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
//! - Semaphores (figure 7): fencelock's `SEM.*` against a Redisson-style semaphore with
//!   expirable permits in Lua (benches/lua/sem_*.lua) whose waiters subscribe to its
//!   channel and retry when a release publishes.
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
pub const SEM_ACQUIRE: &str = include_str!("../lua/sem_acquire.lua");
pub const SEM_RELEASE: &str = include_str!("../lua/sem_release.lua");
pub const SEM_AVAILABLE: &str = include_str!("../lua/sem_available.lua");

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
    pub sem_acquire: String,
    pub sem_release: String,
    pub sem_available: String,
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
            sem_acquire: load_script(con, SEM_ACQUIRE),
            sem_release: load_script(con, SEM_RELEASE),
            sem_available: load_script(con, SEM_AVAILABLE),
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

// ---- figure 7: counting semaphores ------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SemKind {
    Fence,
    Lua,
}

impl SemKind {
    pub const ALL: [SemKind; 2] = [SemKind::Fence, SemKind::Lua];

    pub fn name(self) -> &'static str {
        match self {
            SemKind::Fence => "fencelock (SEM.ACQUIRE ... WAIT / SEM.RELEASE)",
            SemKind::Lua => "Redisson-style expirable-permit semaphore (Lua) + pub/sub",
        }
    }
}

/// The keys of a Redisson-style semaphore named `key`: the free-permit count, the
/// sorted set of leases (permit id -> end of lease) and the pub/sub channel.
pub struct SemKeys {
    pub count: String,
    pub timeout: String,
    pub channel: String,
}

pub fn sem_keys(key: &str) -> SemKeys {
    SemKeys {
        count: key.to_string(),
        timeout: format!("{{{key}}}:timeout"),
        channel: format!("redisson_sem__channel:{{{key}}}"),
    }
}

/// The wall clock in unix ms: what a Redisson client passes to its scripts as "now".
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// Permits granted to one request.
pub struct SemGrant {
    /// When the request that was granted was sent (the last try, for the Lua semaphore).
    pub sent: Instant,
    /// When its reply was read.
    pub at: Instant,
    /// fencelock's fencing token.
    pub token: Option<i64>,
    pub permits: u64,
    /// The Redisson-style semaphore's permit ids (one per permit): what release needs.
    ids: Vec<String>,
}

/// One client of a semaphore: its own connection and, for the Redisson-style semaphore
/// when it waits, its own subscriber connection (one process per client: every waiter
/// gets every message, as separate Redisson instances do).
pub struct SemClient {
    kind: SemKind,
    con: redis::Connection,
    sub: Option<Raw>,
    owner: String,
    limit: u64,
    ttl: u64,
    scripts: Scripts,
    rng: StdRng,
    /// Commands and messages are counted while now < count_until.
    pub count_until: Instant,
    pub cmds: u64,
    pub msgs: u64,
}

impl SemClient {
    /// `waits`: whether this client will wait (the Redisson-style one then needs a
    /// subscriber connection).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: SemKind,
        url: &str,
        port: u16,
        owner: String,
        limit: u64,
        ttl: u64,
        scripts: &Scripts,
        waits: bool,
    ) -> SemClient {
        SemClient {
            kind,
            con: crate::util::connect(url),
            sub: (kind == SemKind::Lua && waits)
                .then(|| Raw::connect(port, Duration::from_secs(60)).expect("connect the subscriber")),
            owner,
            limit,
            ttl,
            scripts: scripts.clone(),
            rng: StdRng::from_entropy(),
            count_until: Instant::now() + Duration::from_secs(3600),
            cmds: 0,
            msgs: 0,
        }
    }

    pub fn con(&mut self) -> &mut redis::Connection {
        &mut self.con
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

    /// Makes the semaphore before first use, not counted: Redisson's
    /// `trySetPermits(limit)` (the free count, set only if absent) for the Lua one;
    /// nothing for fencelock, whose acquires state the limit (a free semaphore is no key).
    pub fn setup(&mut self, key: &str) {
        if self.kind == SemKind::Lua {
            let mut c = redis::cmd("SET");
            c.arg(key).arg(self.limit).arg("NX");
            let v = exec(&mut self.con, &c);
            if !matches!(v, Value::Okay | Value::Nil) {
                wrong(self.kind.name(), &c, &v);
            }
        }
    }

    /// New permit ids (128-bit random, as Redisson makes them), one per permit.
    fn permit_ids(&mut self, permits: u64) -> Vec<String> {
        (0..permits).map(|_| format!("{:032x}", self.rng.gen::<u128>())).collect()
    }

    /// One try. Ok when granted; Err(hint) when not: the Lua semaphore's ms until the
    /// first lease ends (-1: none), -1 for fencelock. `wait_ms`: fencelock's WAIT.
    fn try_once(&mut self, key: &str, permits: u64, ids: &[String], wait_ms: Option<u64>) -> Result<SemGrant, i64> {
        let mut c;
        match self.kind {
            SemKind::Fence => {
                c = redis::cmd("SEM.ACQUIRE");
                c.arg(key).arg(&self.owner).arg(self.limit).arg(self.ttl);
                if permits != 1 {
                    c.arg("COUNT").arg(permits);
                }
                if let Some(w) = wait_ms {
                    c.arg("WAIT").arg(w);
                }
            }
            SemKind::Lua => {
                let k = sem_keys(key);
                let now = unix_ms();
                c = redis::cmd("EVALSHA");
                c.arg(&self.scripts.sem_acquire).arg(3).arg(&k.count).arg(&k.timeout).arg(&k.channel);
                c.arg(permits).arg(now).arg(now + self.ttl);
                for id in ids {
                    c.arg(id);
                }
            }
        }
        self.counted();
        let sent = Instant::now();
        let v = exec(&mut self.con, &c);
        let at = Instant::now();
        match (self.kind, &v) {
            (SemKind::Fence, Value::Int(t)) if *t > 0 => Ok(SemGrant { sent, at, token: Some(*t), permits, ids: vec![] }),
            (SemKind::Fence, Value::Nil) => Err(-1),
            (SemKind::Lua, Value::Array(got))
                if got.len() == ids.len()
                    && got.iter().zip(ids).all(|(g, id)| matches!(g, Value::BulkString(b) if b == id.as_bytes())) =>
            {
                Ok(SemGrant { sent, at, token: None, permits, ids: ids.to_vec() })
            }
            (SemKind::Lua, Value::Int(hint)) if *hint >= -1 => Err(*hint),
            _ => wrong(self.kind.name(), &c, &v),
        }
    }

    /// An acquire that must be granted at once (nobody else uses this semaphore).
    pub fn acquire_free(&mut self, key: &str, permits: u64) -> SemGrant {
        let ids = if self.kind == SemKind::Lua { self.permit_ids(permits) } else { vec![] };
        match self.try_once(key, permits, &ids, None) {
            Ok(g) => g,
            Err(hint) => panic!(
                "WRONG RESULT from {}: an acquire of {permits} permits of {key}, which nobody else uses, was refused ({hint})",
                self.kind.name()
            ),
        }
    }

    /// One try that never waits (Redisson's `tryAcquire(permits, leaseTime)`).
    pub fn try_acquire(&mut self, key: &str, permits: u64) -> Option<SemGrant> {
        let ids = if self.kind == SemKind::Lua { self.permit_ids(permits) } else { vec![] };
        self.try_once(key, permits, &ids, None).ok()
    }

    /// Takes `permits`, waiting the contender's way; None if `stop` came first.
    pub fn acquire(&mut self, key: &str, permits: u64, stop: Instant) -> Option<SemGrant> {
        match self.kind {
            SemKind::Fence => {
                // The server-side wait outlasts the round by 2 s: waiters still queued
                // when the round ends are served by the holders leaving.
                let wait_ms = stop.saturating_duration_since(Instant::now()).as_millis() as u64 + 2000;
                match self.try_once(key, permits, &[], Some(wait_ms)) {
                    Ok(g) => Some(g),
                    Err(_) if Instant::now() >= stop => None,
                    Err(_) => panic!(
                        "WRONG RESULT from {}: SEM.ACQUIRE {key} ... WAIT {wait_ms} answered nil before its wait was over",
                        self.kind.name()
                    ),
                }
            }
            SemKind::Lua => self.acquire_lua(key, permits, stop),
        }
    }

    /// Redisson's `acquire(permits, leaseTime)`: try; if refused, subscribe to the
    /// semaphore's channel, then loop { try; wait for a message at most until the first
    /// lease ends }, and unsubscribe once granted. Messages already received when it
    /// wakes are taken together (one retry for all of them).
    fn acquire_lua(&mut self, key: &str, permits: u64, stop: Instant) -> Option<SemGrant> {
        let ids = self.permit_ids(permits);
        if let Ok(g) = self.try_once(key, permits, &ids, None) {
            return Some(g);
        }
        let channel = sem_keys(key).channel;
        self.counted();
        let sub = self.sub.as_mut().expect("a waiting client has a subscriber connection");
        sub.send(&["SUBSCRIBE", channel.as_str()]).expect("write to the subscriber connection");
        let f = sub.read().expect("read a frame from the subscriber connection");
        if f.push_kind().as_deref() != Some("subscribe") {
            panic!("SUBSCRIBE {channel} answered {f:?}");
        }
        let result = loop {
            match self.try_once(key, permits, &ids, None) {
                Ok(g) => break Some(g),
                Err(hint) => {
                    let now = Instant::now();
                    if now >= stop {
                        break None;
                    }
                    let left = stop - now;
                    let wait = if hint < 0 { left } else { Duration::from_millis(hint as u64).min(left) };
                    if wait.is_zero() {
                        continue;
                    }
                    let mut first = self.sub.as_mut().unwrap().read_within(wait).expect("subscriber connection");
                    while let Some(f) = first {
                        if f.push_kind().as_deref() != Some("message") {
                            panic!("unexpected frame on the subscriber connection: {f:?}");
                        }
                        self.message();
                        first = self.sub.as_mut().unwrap().read_within(Duration::ZERO).expect("subscriber connection");
                    }
                }
            }
        };
        self.counted();
        let sub = self.sub.as_mut().unwrap();
        sub.send(&["UNSUBSCRIBE", channel.as_str()]).expect("write to the subscriber connection");
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

    /// Gives back a grant this client holds; anything but "released" is a wrong result.
    pub fn release(&mut self, key: &str, g: &SemGrant) {
        let mut c;
        let want;
        match self.kind {
            SemKind::Fence => {
                c = redis::cmd("SEM.RELEASE");
                c.arg(key).arg(&self.owner);
                want = 1;
            }
            SemKind::Lua => {
                let k = sem_keys(key);
                c = redis::cmd("EVALSHA");
                c.arg(&self.scripts.sem_release).arg(3).arg(&k.count).arg(&k.timeout).arg(&k.channel).arg(unix_ms());
                for id in &g.ids {
                    c.arg(id);
                }
                want = g.permits as i64;
            }
        }
        self.counted();
        let v = exec(&mut self.con, &c);
        if !matches!(v, Value::Int(n) if n == want) {
            wrong(self.kind.name(), &c, &v);
        }
    }
}

/// The free permits of a semaphore, each contender's own way: `SEM.INFO`'s `available`
/// (`limit` when it answers nil: free, nobody waiting) or Redisson's `availablePermits()`
/// (which first reclaims the permits whose lease ended).
pub fn sem_available(kind: SemKind, con: &mut redis::Connection, key: &str, limit: u64, s: &Scripts) -> i64 {
    let mut c;
    match kind {
        SemKind::Fence => {
            c = redis::cmd("SEM.INFO");
            c.arg(key);
        }
        SemKind::Lua => {
            let k = sem_keys(key);
            c = redis::cmd("EVALSHA");
            c.arg(&s.sem_available).arg(3).arg(&k.count).arg(&k.timeout).arg(&k.channel).arg(unix_ms());
        }
    }
    let v = exec(con, &c);
    match (kind, &v) {
        (SemKind::Fence, Value::Nil) => limit as i64,
        (SemKind::Fence, Value::Array(items)) => {
            for kv in items.chunks(2) {
                if let [Value::BulkString(k), Value::Int(n)] = kv {
                    if k == b"available" {
                        return *n;
                    }
                }
            }
            wrong(kind.name(), &c, &v)
        }
        (SemKind::Fence, Value::Map(items)) => {
            for (k, n) in items {
                if let (Value::BulkString(k), Value::Int(n)) = (k, n) {
                    if k == b"available" {
                        return *n;
                    }
                }
            }
            wrong(kind.name(), &c, &v)
        }
        (SemKind::Lua, Value::Int(n)) => *n,
        _ => wrong(kind.name(), &c, &v),
    }
}
