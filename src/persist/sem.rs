//! The semaphore kind (`SEM.*`): data type `locksemph`, effects `FENCELOCK.SEMHOLD` and
//! `FENCELOCK.SEMDROP`, sent only for the holds that changed. The limit travels with
//! every hold (it changes only with a grant).
//!
//! RDB layout: limit (unsigned), hold count (unsigned), then per hold: owner (buffer),
//! permits (unsigned), token (signed), deadline ms (signed), holds (unsigned).

use std::any::Any;

use redis_module::native_types::RedisType;
use redis_module::{Context, NextArg, RedisString, RedisValue};

use crate::args;
use crate::command;
use crate::machinery::clock::{self, ENCODING_VERSION};
use crate::machinery::commands::{Access, Arg, Command};
use crate::machinery::effects::{self, Arg::*};
use crate::machinery::kind::{HolderChanges, Kind, Request};
use crate::machinery::store::{self, Registered};
use crate::error::{Error, Result};
use crate::ffi::{self, AofOut, Args, Db, DigestOut, RdbIn, RdbOut, TypeValue};
use crate::logic::semaphore::{Ask, Hold, Semaphore, MAX_LIMIT};
use crate::logic::{Millis, Token};
use crate::persist::sane_hold;

pub static SEM_TYPE: RedisType = RedisType::new("locksemph", ENCODING_VERSION, ffi::type_methods::<Semaphore>());

pub static KIND: Registered<Semaphore> = Registered::new();

/// `FENCELOCK.SEMHOLD key limit owner permits token deadline holds`: the semaphore has
/// this limit, and this owner's hold is exactly so.
pub const HOLD_EFFECT: Command = Command {
    name: c"fencelock.semhold",
    entry: command!(apply_hold),
    flags: c"write",
    acl: "write slow",
    arity: 8,
    access: Access::Overwrite,
    summary: c"Internal: sets one hold of a semaphore to a replicated state",
    complexity: c"O(log N) where N is the number of holders",
    args: &[
        Arg::Key,
        Arg::Integer(c"limit"),
        Arg::Text(c"owner"),
        Arg::Integer(c"permits"),
        Arg::Integer(c"token"),
        Arg::Integer(c"deadline"),
        Arg::Integer(c"holds"),
    ],
};

/// `FENCELOCK.SEMDROP key owner`: that owner's hold is gone.
pub const DROP_EFFECT: Command = Command {
    name: c"fencelock.semdrop",
    entry: command!(apply_drop),
    flags: c"write",
    acl: "write slow",
    arity: 3,
    access: Access::Delete,
    summary: c"Internal: removes one hold of a semaphore",
    complexity: c"O(log N) where N is the number of holders",
    args: &[Arg::Key, Arg::Text(c"owner")],
};

fn apply_hold(ctx: &Context, args: Args) -> Result<RedisValue> {
    effects::require_internal(ctx, HOLD_EFFECT.name)?;
    let mut args = args::take(args, 7, 0)?;
    let key = args.next_arg()?;
    let limit = effects::int(&args.next_arg()?)?;
    let owner = args::owner(&args.next_arg()?)?.to_vec();
    let permits = effects::int(&args.next_arg()?)?;
    let token = effects::int(&args.next_arg()?)?;
    let deadline = effects::int(&args.next_arg()?)?;
    let holds = effects::int(&args.next_arg()?)?;
    if !(1..=MAX_LIMIT as i64).contains(&limit) || !(1..=limit).contains(&permits) || token <= 0 || holds <= 0 {
        return Err(Error::Syntax);
    }
    let hold = Hold { permits: permits as u64, token, deadline, holds: holds as u64 };
    store::apply_effect::<Semaphore>(ctx, &key, |sem| {
        sem.set_limit(limit as u64);
        sem.set(&owner, Some(hold));
    })?;
    clock::observe(token);
    Ok(RedisValue::SimpleStringStatic("OK"))
}

fn apply_drop(ctx: &Context, args: Args) -> Result<RedisValue> {
    effects::require_internal(ctx, DROP_EFFECT.name)?;
    let mut args = args::take(args, 2, 0)?;
    let key = args.next_arg()?;
    let owner = args.next_arg()?;
    store::apply_effect::<Semaphore>(ctx, &key, |sem| sem.set(owner.as_slice(), None))?;
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// The arguments of `HOLD_EFFECT` after the key.
fn hold_args<'a>(limit: u64, owner: &'a [u8], h: &Hold) -> [effects::Arg<'a>; 6] {
    [Int(limit as i64), Bytes(owner), Int(h.permits as i64), Int(h.token), Int(h.deadline), Int(h.holds as i64)]
}

impl Kind for Semaphore {
    const EXPIRED_EVENT: &'static std::ffi::CStr = c"sem.expired";

    type Changes = HolderChanges<Vec<u8>>;

    fn data_type() -> &'static RedisType {
        &SEM_TYPE
    }

    /// Bound to the limit its waiters agreed to, so a newcomer is compared with it.
    fn vacant_for(front: &dyn Request) -> Self {
        let front: &dyn Any = front;
        front.downcast_ref::<Ask>().map_or_else(Semaphore::default, |ask| Semaphore::with_limit(ask.limit))
    }

    fn next_deadline(&self) -> Option<Millis> {
        self.earliest_deadline()
    }

    fn end_over(&mut self, now: Millis) {
        Semaphore::end_over(self, now);
    }

    fn over_holds(&self, now: Millis) -> Vec<Token> {
        self.stored().filter(|(_, h)| h.deadline <= now).map(|(_, h)| h.token).collect()
    }

    fn is_vacant(&self) -> bool {
        self.is_empty()
    }

    fn take_changes(&mut self) -> HolderChanges<Vec<u8>> {
        HolderChanges::new(Semaphore::take_changes(self), |owner| self.get(owner).is_none())
    }

    fn replicate(&self, changes: &HolderChanges<Vec<u8>>, ctx: &Context, key: &RedisString) {
        for owner in &changes.holders {
            match self.get(owner) {
                Some(h) => effects::emit(ctx, &HOLD_EFFECT, key, &hold_args(self.limit(), owner, h)),
                None => effects::emit(ctx, &DROP_EFFECT, key, &[Bytes(owner)]),
            }
        }
    }
}

impl TypeValue for Semaphore {
    const LIVE: &'static std::sync::atomic::AtomicI64 = &crate::machinery::stats::SEMAPHORES;

    fn rdb_save(&self, out: &mut RdbOut) {
        out.unsigned(self.limit());
        out.unsigned(self.len() as u64);
        for (owner, hold) in self.stored() {
            out.bytes(owner);
            out.unsigned(hold.permits);
            out.signed(hold.token);
            out.signed(hold.deadline);
            out.unsigned(hold.holds);
        }
    }

    fn rdb_load(input: &mut RdbIn, encver: i32) -> Option<Self> {
        if encver != ENCODING_VERSION {
            return None;
        }
        let mut sem = Semaphore::with_limit(input.unsigned()?);
        let mut highest = 0;
        for _ in 0..input.unsigned()? {
            let (owner, permits) = (input.bytes()?, input.unsigned()?);
            let (token, deadline, holds) = (input.signed()?, input.signed()?, input.unsigned()?);
            let fresh = !owner.is_empty() && sem.get(&owner).is_none();
            let deadline = sane_hold(token, deadline, holds).filter(|_| fresh)?;
            highest = highest.max(token);
            sem.set(&owner, Some(Hold { permits, token, deadline, holds }));
        }
        Semaphore::take_changes(&mut sem);
        // A vacant one (kept for waiters when saved) may still be unbound.
        let vacant = sem.is_empty() && sem.limit() <= MAX_LIMIT;
        if !(sem.consistent() || vacant) {
            return None;
        }
        store::on_load(highest);
        Some(sem)
    }

    fn aof_rewrite(&self, out: &mut AofOut) {
        for (owner, h) in self.stored() {
            effects::emit_aof(out, &HOLD_EFFECT, &hold_args(self.limit(), owner, h));
        }
    }

    fn digest(&self, out: &mut DigestOut) {
        out.signed(self.limit() as i64);
        for (owner, h) in self.stored() {
            out.bytes(owner);
            out.signed(h.permits as i64);
            out.signed(h.token);
            out.signed(h.deadline);
            out.signed(h.holds as i64);
        }
    }

    fn mem_usage(&self) -> usize {
        // Each hold is stored twice (by owner and by deadline), with tree overhead.
        let per_hold = |owner: &[u8]| 2 * owner.len() + 96;
        std::mem::size_of::<Semaphore>() + self.stored().map(|(o, _)| per_hold(o)).sum::<usize>()
    }

    fn unlinked(&self, db: Db, key: &[u8]) {
        store::on_unlink(self, db, key);
    }
}
