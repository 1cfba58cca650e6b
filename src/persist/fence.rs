//! The fence kind (`FENCE.*`): data type `lockfence`, effect `FENCELOCK.FENCE`. A fence
//! has no leases and no waiters; its key stays.
//!
//! RDB layout: highest (signed), issued (signed).

use redis_module::native_types::RedisType;
use redis_module::{Context, NextArg, RedisString, RedisValue};

use crate::args;
use crate::command;
use crate::machinery::clock::{self, ENCODING_VERSION};
use crate::machinery::commands::{Access, Arg, Command};
use crate::machinery::effects::{self, Arg::Int};
use crate::machinery::kind::{Changes, Kind};
use crate::machinery::store::{self, Registered};
use crate::error::{Error, Result};
use crate::ffi::{self, AofOut, Args, DigestOut, RdbIn, RdbOut, TypeValue};
use crate::logic::fence::Fence;
use crate::logic::Millis;

pub static FENCE_TYPE: RedisType = RedisType::new("lockfence", ENCODING_VERSION, ffi::type_methods::<Fence>());

pub static KIND: Registered<Fence> = Registered::new();

/// `FENCELOCK.FENCE key highest issued`: the fence records exactly so.
pub const EFFECT: Command = Command {
    name: c"fencelock.fence",
    entry: command!(apply),
    flags: c"write",
    acl: "write slow",
    arity: 4,
    access: Access::Overwrite,
    summary: c"Internal: sets a fence to a replicated state",
    complexity: c"O(1)",
    args: &[Arg::Key, Arg::Integer(c"highest"), Arg::Integer(c"issued")],
};

/// A fence could have been made by this module.
fn sane(highest: i64, issued: i64) -> bool {
    highest >= 0 && issued >= 0 && issued <= highest
}

fn apply(ctx: &Context, args: Args) -> Result<RedisValue> {
    effects::require_internal(ctx, EFFECT.name)?;
    let mut args = args::take(args, 3, 0)?;
    let key = args.next_arg()?;
    let highest = effects::int(&args.next_arg()?)?;
    let issued = effects::int(&args.next_arg()?)?;
    if !sane(highest, issued) {
        return Err(Error::Syntax);
    }
    store::apply_effect::<Fence>(ctx, &key, |f| f.set(highest, issued))?;
    clock::observe(issued);
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// Whether the fence changed.
pub struct FenceChanged(bool);

impl Changes for FenceChanged {
    fn any(&self) -> bool {
        self.0
    }

    fn released(&self) -> bool {
        false
    }
}

impl Kind for Fence {
    const EXPIRED_EVENT: &'static std::ffi::CStr = c"fence.expired";

    type Changes = FenceChanged;

    fn data_type() -> &'static RedisType {
        &FENCE_TYPE
    }

    fn next_deadline(&self) -> Option<Millis> {
        None
    }

    fn end_over(&mut self, _now: Millis) {}

    fn is_vacant(&self) -> bool {
        false
    }

    fn take_changes(&mut self) -> FenceChanged {
        FenceChanged(self.take_changed())
    }

    fn replicate(&self, _changes: &FenceChanged, ctx: &Context, key: &RedisString) {
        effects::emit(ctx, &EFFECT, key, &[Int(self.highest), Int(self.issued)]);
    }
}

impl TypeValue for Fence {
    const LIVE: &'static std::sync::atomic::AtomicI64 = &crate::machinery::stats::FENCES;

    fn rdb_save(&self, out: &mut RdbOut) {
        out.signed(self.highest);
        out.signed(self.issued);
    }

    fn rdb_load(input: &mut RdbIn, encver: i32) -> Option<Self> {
        if encver != ENCODING_VERSION {
            return None;
        }
        let (highest, issued) = (input.signed()?, input.signed()?);
        if !sane(highest, issued) {
            return None;
        }
        store::on_load(issued);
        Some(Fence::new(highest, issued))
    }

    fn aof_rewrite(&self, out: &mut AofOut) {
        effects::emit_aof(out, &EFFECT, &[Int(self.highest), Int(self.issued)]);
    }

    fn digest(&self, out: &mut DigestOut) {
        out.signed(self.highest);
        out.signed(self.issued);
    }

    fn mem_usage(&self) -> usize {
        std::mem::size_of::<Fence>()
    }
}
