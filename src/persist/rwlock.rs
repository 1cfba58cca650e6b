//! The read-write lock kind (`RWLOCK.*`): data type `lockrwlck`, effects
//! `FENCELOCK.RWHOLD` and `FENCELOCK.RWDROP`, sent only for the holds that changed, so
//! replication stays O(1) per operation however many readers hold the lock.
//!
//! RDB layout: hold count (unsigned), then per hold: mode (unsigned, 0 write, 1 read),
//! owner (buffer), token (signed), deadline ms (signed), holds (unsigned).

use redis_module::native_types::RedisType;
use redis_module::{Context, NextArg, RedisString, RedisValue};

use crate::args;
use crate::command;
use crate::machinery::clock::{self, ENCODING_VERSION};
use crate::machinery::commands::{Access, Arg, Command};
use crate::machinery::effects::{self, Arg::*};
use crate::machinery::kind::{HolderChanges, Kind};
use crate::machinery::store::{self, Registered};
use crate::error::{Error, Result};
use crate::ffi::{self, AofOut, Args, Db, DigestOut, RdbIn, RdbOut, TypeValue};
use crate::logic::rwlock::{Hold, HolderKey, Mode, RwLock};
use crate::logic::{Millis, Token};
use crate::persist::sane_hold;

pub static RWLOCK_TYPE: RedisType = RedisType::new("lockrwlck", ENCODING_VERSION, ffi::type_methods::<RwLock>());

pub static KIND: Registered<RwLock> = Registered::new();

/// `FENCELOCK.RWHOLD key mode owner token deadline holds`: one hold is exactly so.
pub const HOLD_EFFECT: Command = Command {
    name: c"fencelock.rwhold",
    entry: command!(apply_hold),
    flags: c"write",
    acl: "write slow",
    arity: 7,
    access: Access::Overwrite,
    summary: c"Internal: sets one hold of a read-write lock to a replicated state",
    complexity: c"O(log N) where N is the number of holders",
    args: &[
        Arg::Key,
        Arg::Text(c"mode"),
        Arg::Text(c"owner"),
        Arg::Integer(c"token"),
        Arg::Integer(c"deadline"),
        Arg::Integer(c"holds"),
    ],
};

/// `FENCELOCK.RWDROP key mode owner`: that hold is gone.
pub const DROP_EFFECT: Command = Command {
    name: c"fencelock.rwdrop",
    entry: command!(apply_drop),
    flags: c"write",
    acl: "write slow",
    arity: 4,
    access: Access::Delete,
    summary: c"Internal: removes one hold of a read-write lock",
    complexity: c"O(log N) where N is the number of holders",
    args: &[Arg::Key, Arg::Text(c"mode"), Arg::Text(c"owner")],
};

fn mode_arg(arg: &RedisString) -> Result<Mode> {
    Mode::parse(arg.as_slice()).ok_or(Error::Syntax)
}

fn apply_hold(ctx: &Context, args: Args) -> Result<RedisValue> {
    effects::require_internal(ctx, HOLD_EFFECT.name)?;
    let mut args = args::take(args, 6, 0)?;
    let key = args.next_arg()?;
    let mode = mode_arg(&args.next_arg()?)?;
    let owner = args::owner(&args.next_arg()?)?.to_vec();
    let token = effects::int(&args.next_arg()?)?;
    let deadline = effects::int(&args.next_arg()?)?;
    let holds = effects::int(&args.next_arg()?)?;
    if token <= 0 || holds <= 0 {
        return Err(Error::Syntax);
    }
    let hold = Hold { token, deadline, holds: holds as u64 };
    store::apply_effect::<RwLock>(ctx, &key, |lock| lock.set(mode, &owner, Some(hold)))?;
    clock::observe(token);
    Ok(RedisValue::SimpleStringStatic("OK"))
}

fn apply_drop(ctx: &Context, args: Args) -> Result<RedisValue> {
    effects::require_internal(ctx, DROP_EFFECT.name)?;
    let mut args = args::take(args, 3, 0)?;
    let key = args.next_arg()?;
    let mode = mode_arg(&args.next_arg()?)?;
    let owner = args.next_arg()?;
    store::apply_effect::<RwLock>(ctx, &key, |lock| lock.set(mode, owner.as_slice(), None))?;
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// The arguments of `HOLD_EFFECT` after the key.
fn hold_args<'a>(mode: Mode, owner: &'a [u8], h: &Hold) -> [effects::Arg<'a>; 5] {
    [Bytes(mode.name().as_bytes()), Bytes(owner), Int(h.token), Int(h.deadline), Int(h.holds as i64)]
}

impl Kind for RwLock {
    const EXPIRED_EVENT: &'static std::ffi::CStr = c"rwlock.expired";

    type Changes = HolderChanges<HolderKey>;

    fn data_type() -> &'static RedisType {
        &RWLOCK_TYPE
    }

    fn next_deadline(&self) -> Option<Millis> {
        self.earliest_deadline()
    }

    fn end_over(&mut self, now: Millis) {
        RwLock::end_over(self, now);
    }

    fn over_holds(&self, now: Millis) -> Vec<Token> {
        self.stored().filter(|(_, h)| h.deadline <= now).map(|(_, h)| h.token).collect()
    }

    fn is_vacant(&self) -> bool {
        self.is_empty()
    }

    fn take_changes(&mut self) -> HolderChanges<HolderKey> {
        HolderChanges::new(RwLock::take_changes(self), |(mode, owner)| self.get(*mode, owner).is_none())
    }

    fn replicate(&self, changes: &HolderChanges<HolderKey>, ctx: &Context, key: &RedisString) {
        for (mode, owner) in &changes.holders {
            match self.get(*mode, owner) {
                Some(h) => effects::emit(ctx, &HOLD_EFFECT, key, &hold_args(*mode, owner, h)),
                None => effects::emit(ctx, &DROP_EFFECT, key, &[Bytes(mode.name().as_bytes()), Bytes(owner)]),
            }
        }
    }
}

fn mode_code(mode: Mode) -> u64 {
    match mode {
        Mode::Write => 0,
        Mode::Read => 1,
    }
}

impl TypeValue for RwLock {
    const LIVE: &'static std::sync::atomic::AtomicI64 = &crate::machinery::stats::RWLOCKS;

    fn rdb_save(&self, out: &mut RdbOut) {
        out.unsigned(self.len() as u64);
        for ((mode, owner), hold) in self.stored() {
            out.unsigned(mode_code(*mode));
            out.bytes(owner);
            out.signed(hold.token);
            out.signed(hold.deadline);
            out.unsigned(hold.holds);
        }
    }

    fn rdb_load(input: &mut RdbIn, encver: i32) -> Option<Self> {
        if encver != ENCODING_VERSION {
            return None;
        }
        let mut lock = RwLock::default();
        let mut highest = 0;
        for _ in 0..input.unsigned()? {
            let mode = match input.unsigned()? {
                0 => Mode::Write,
                1 => Mode::Read,
                _ => return None,
            };
            let (owner, token, deadline, holds) = (input.bytes()?, input.signed()?, input.signed()?, input.unsigned()?);
            let fresh = !owner.is_empty() && lock.get(mode, &owner).is_none();
            let deadline = sane_hold(token, deadline, holds).filter(|_| fresh)?;
            highest = highest.max(token);
            lock.set(mode, &owner, Some(Hold { token, deadline, holds }));
        }
        RwLock::take_changes(&mut lock);
        if !lock.exclusive() {
            return None;
        }
        store::on_load(highest);
        Some(lock)
    }

    fn aof_rewrite(&self, out: &mut AofOut) {
        for ((mode, owner), h) in self.stored() {
            effects::emit_aof(out, &HOLD_EFFECT, &hold_args(*mode, owner, h));
        }
    }

    fn digest(&self, out: &mut DigestOut) {
        for ((mode, owner), h) in self.stored() {
            out.signed(mode_code(*mode) as i64);
            out.bytes(owner);
            out.signed(h.token);
            out.signed(h.deadline);
            out.signed(h.holds as i64);
        }
    }

    fn mem_usage(&self) -> usize {
        // Each hold is stored twice (by holder and by deadline), with tree overhead.
        let per_hold = |owner: &[u8]| 2 * owner.len() + 96;
        std::mem::size_of::<RwLock>() + self.stored().map(|((_, o), _)| per_hold(o)).sum::<usize>()
    }

    fn unlinked(&self, db: Db, key: &[u8]) {
        store::on_unlink(self, db, key);
    }
}
