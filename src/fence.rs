//! `FENCE.*`: fences that any Redis data can sit behind.

use redis_module::{Context, NextArg, RedisString, RedisValue};

use crate::args;
use crate::effects;
use crate::error::{Error, Result};
use crate::logic::fence::Fence;
use crate::state::{self, now_ms};
use crate::types::FENCE_TYPE;

/// Runs `op` on the fence at `key` (a new one when absent); stores and propagates the
/// result when `op` succeeded and changed it.
fn update<R>(ctx: &Context, key: &RedisString, op: impl FnOnce(&mut Fence) -> Result<R>) -> Result<R> {
    let handle = ctx.open_key_writable(key);
    let stored = handle.get_value::<Fence>(&FENCE_TYPE).map_err(|_| Error::WrongType)?;
    let mut fence = stored.as_deref().copied().unwrap_or_default();
    let result = op(&mut fence)?;
    match stored {
        Some(f) if *f == fence => return Ok(result),
        Some(f) => *f = fence,
        None => handle.set_value(&FENCE_TYPE, fence)?,
    }
    effects::replicate_fence(ctx, key, &fence);
    Ok(result)
}

/// `FENCE.NEXT key`
pub fn next(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let mut args = args::take(args, 1, 0)?;
    let key = args.next_arg()?;
    let token = update(ctx, &key, |f| Ok(state::with(|g| f.next(now_ms(), &mut g.tokens))?))?;
    Ok(RedisValue::Integer(token))
}

/// `FENCE.CHECK key token`
pub fn check(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let mut args = args::take(args, 2, 0)?;
    let key = args.next_arg()?;
    let token = args::token(&args.next_arg()?)?;
    update(ctx, &key, |f| Ok(f.check(token)?))?;
    Ok(RedisValue::Integer(1))
}

/// `FENCE.CURRENT key`
pub fn current(ctx: &Context, args: Vec<RedisString>) -> Result<RedisValue> {
    let mut args = args::take(args, 1, 0)?;
    let key = args.next_arg()?;
    let handle = ctx.open_key(&key);
    let stored = handle.get_value::<Fence>(&FENCE_TYPE).map_err(|_| Error::WrongType)?;
    Ok(RedisValue::Integer(stored.map_or(0, |f| f.highest)))
}
