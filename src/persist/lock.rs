//! The mutex kind (`LOCK.*`): data type `lockmutex`, effect `FENCELOCK.MUTEX`.
//!
//! RDB layout: owner (buffer), token (signed), deadline ms (signed), holds (unsigned).
//! An empty owner with token and holds 0 is a free lock (saved only when a snapshot
//! catches a lock kept free for its waiters). The token floor rides along as this type's
//! aux data, saved before the keys.

use redis_module::native_types::RedisType;
use redis_module::{Context, NextArg, RedisString, RedisValue};

use crate::args;
use crate::command;
use crate::machinery::clock::{self, TokenFloor, ENCODING_VERSION};
use crate::machinery::commands::{Access, Arg, Command};
use crate::machinery::effects::{self, Arg::*};
use crate::machinery::kind::{Changes, Kind};
use crate::machinery::store::{self, Registered};
use crate::error::{Error, Result};
use crate::ffi::{self, AofOut, Args, Db, DigestOut, RdbIn, RdbOut, TypeValue};
use crate::logic::owner::Owner;
use crate::logic::mutex::{self, Holder, Mutex};
use crate::logic::{Millis, Token};
use crate::persist::sane_hold;

pub static MUTEX_TYPE: RedisType =
    RedisType::new("lockmutex", ENCODING_VERSION, ffi::type_methods_with_aux::<Mutex, TokenFloor>());

pub static KIND: Registered<Mutex> = Registered::new();

/// `FENCELOCK.MUTEX key owner token deadline holds`: the mutex is held exactly so.
pub const EFFECT: Command = Command {
    name: c"fencelock.mutex",
    entry: command!(apply),
    flags: c"write",
    acl: "write slow",
    arity: 6,
    access: Access::Overwrite,
    summary: c"Internal: sets a mutex to a replicated state",
    complexity: c"O(1)",
    args: &[Arg::Key, Arg::Text(c"owner"), Arg::Integer(c"token"), Arg::Integer(c"deadline"), Arg::Integer(c"holds")],
};

fn apply(ctx: &Context, args: Args) -> Result<RedisValue> {
    effects::require_internal(ctx, EFFECT.name)?;
    let mut args = args::take(args, 5, 0)?;
    let key = args.next_arg()?;
    let owner = Owner::new(args::owner(&args.next_arg()?)?);
    let token = effects::int(&args.next_arg()?)?;
    let deadline = effects::int(&args.next_arg()?)?;
    let holds = effects::int(&args.next_arg()?)?;
    if token <= 0 || holds <= 0 {
        return Err(Error::Syntax);
    }
    let holder = Holder { owner, token, deadline, holds: holds as u64 };
    store::apply_effect::<Mutex>(ctx, &key, |m| *m = Mutex::with_holder(holder))?;
    clock::observe(token);
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// The arguments of `EFFECT` after the key: the holder as it is.
fn effect_args(h: &Holder) -> [effects::Arg<'_>; 4] {
    [Bytes(&h.owner), Int(h.token), Int(h.deadline), Int(h.holds as i64)]
}

impl Changes for mutex::Changes {
    fn any(&self) -> bool {
        self.changed
    }

    fn released(&self) -> bool {
        self.released
    }
}

impl Kind for Mutex {
    const EXPIRED_EVENT: &'static std::ffi::CStr = c"lock.expired";

    type Changes = mutex::Changes;

    fn data_type() -> &'static RedisType {
        &MUTEX_TYPE
    }

    fn next_deadline(&self) -> Option<Millis> {
        self.deadline()
    }

    fn end_over(&mut self, now: Millis) {
        self.end_if_over(now);
    }

    fn over_holds(&self, now: Millis) -> Vec<Token> {
        self.stored_holder().filter(|h| h.deadline <= now).map(|h| h.token).into_iter().collect()
    }

    fn is_vacant(&self) -> bool {
        self.stored_holder().is_none()
    }

    fn take_changes(&mut self) -> mutex::Changes {
        Mutex::take_changes(self)
    }

    fn replicate(&self, _changes: &mutex::Changes, ctx: &Context, key: &RedisString) {
        if let Some(h) = self.stored_holder() {
            effects::emit(ctx, &EFFECT, key, &effect_args(h));
        }
    }
}

impl TypeValue for Mutex {
    const LIVE: &'static std::sync::atomic::AtomicI64 = &crate::machinery::stats::MUTEXES;

    fn rdb_save(&self, out: &mut RdbOut) {
        match self.stored_holder() {
            Some(h) => {
                out.bytes(&h.owner);
                out.signed(h.token);
                out.signed(h.deadline);
                out.unsigned(h.holds);
            }
            None => {
                out.bytes(b"");
                out.signed(0);
                out.signed(0);
                out.unsigned(0);
            }
        }
    }

    fn rdb_load(input: &mut RdbIn, encver: i32) -> Option<Self> {
        if encver != ENCODING_VERSION {
            return None;
        }
        let (owner, token, deadline, holds) = (input.bytes()?, input.signed()?, input.signed()?, input.unsigned()?);
        if owner.is_empty() && token == 0 && holds == 0 {
            store::on_load(0);
            return Some(Mutex::default());
        }
        let deadline = sane_hold(token, deadline, holds).filter(|_| !owner.is_empty())?;
        store::on_load(token);
        Some(Mutex::with_holder(Holder { owner: Owner::new(&owner), token, deadline, holds }))
    }

    fn aof_rewrite(&self, out: &mut AofOut) {
        if let Some(h) = self.stored_holder() {
            effects::emit_aof(out, &EFFECT, &effect_args(h));
        }
    }

    fn digest(&self, out: &mut DigestOut) {
        if let Some(h) = self.stored_holder() {
            out.bytes(&h.owner);
            out.signed(h.token);
            out.signed(h.deadline);
            out.signed(h.holds as i64);
        }
    }

    fn mem_usage(&self) -> usize {
        std::mem::size_of::<Mutex>() + self.stored_holder().map_or(0, |h| h.owner.heap_size())
    }

    fn unlinked(&self, db: Db, key: &[u8]) {
        store::on_unlink(self, db, key);
    }
}
