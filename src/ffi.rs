//! Every raw call into the server, in one place, each with the reason it cannot go
//! through the `redis-module` crate's safe API. The rest of the module calls these
//! functions and the crate's safe API only.
//!
//! Function pointers of the module API are null where the server lacks the call (they
//! are filled in when the module loads), so every call checks its pointer: an API newer
//! than the server is skipped, never called.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use redis_module::{raw, Context, RedisString};

pub type Db = i32;

const OK: c_int = raw::REDISMODULE_OK as c_int;
const ERR: c_int = raw::REDISMODULE_ERR as c_int;

// ---- the server's clock, databases and state --------------------------------------

/// Milliseconds on the server's own clock. Raw: the crate has no wrapper for it.
pub fn server_ms() -> Option<i64> {
    // SAFETY: no arguments; filled in at load, checked for null.
    unsafe { raw::RedisModule_Milliseconds.map(|ms| ms()) }
}

/// The database the context's client has selected. Raw: no crate wrapper.
pub fn selected_db(ctx: &Context) -> Db {
    // SAFETY: `ctx` is the live context Redis handed us.
    unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx)) }
}

/// Selects `db` on the context's client. Raw: no crate wrapper.
pub fn select_db(ctx: &Context, db: Db) -> bool {
    // SAFETY: as above; Redis checks the range.
    unsafe { raw::RedisModule_SelectDb.is_some_and(|f| f(ctx.ctx, db) == OK) }
}

/// True while Redis wants no writes and no replication traffic (clients paused for
/// writes, a failover in progress). Raw: the crate's wrapper is missing in the build
/// that loads on Redis 7.0.
pub fn avoid_replica_traffic() -> bool {
    // SAFETY: no arguments.
    unsafe { raw::RedisModule_AvoidReplicaTraffic.is_some_and(|f| f() != 0) }
}

/// Whether this server feeds a replication stream: it is a replica, has replicas, or
/// has a backlog. True when INFO does not tell (a field missing). Costs an INFO section,
/// so only for rare checks. Raw: the crate's field reader leaks each value it reads.
pub fn replication_stream_exists(ctx: &Context) -> bool {
    // SAFETY: the info data lives until freed below; `GetFieldC` returns a string owned by
    // it (or null), read before the free.
    unsafe {
        let (Some(get), Some(field_c), Some(free)) =
            (raw::RedisModule_GetServerInfo, raw::RedisModule_ServerInfoGetFieldC, raw::RedisModule_FreeServerInfo)
        else {
            return true;
        };
        let info = get(ctx.ctx, c"replication".as_ptr());
        if info.is_null() {
            return true;
        }
        let is = |name: &CStr, want: &CStr| {
            let value = field_c(info, name.as_ptr());
            !value.is_null() && CStr::from_ptr(value) == want
        };
        let none = is(c"role", c"master") && is(c"connected_slaves", c"0") && is(c"repl_backlog_active", c"0");
        free(ctx.ctx, info);
        !none
    }
}

// ---- blocking on keys --------------------------------------------------------------

/// The private value of a client blocked on a key: what its callbacks do.
pub trait Blocked: Sized + 'static {
    /// Redis retried the client because something signalled its key ready: true when
    /// this answered the client (it unblocks), false to keep it blocked.
    fn ready(&self, ctx: &Context) -> bool;
    /// The timeout passed, `CLIENT UNBLOCK`, or `unblock`: must answer the client.
    fn timed_out(&self, ctx: &Context);
    /// The client disconnected while blocked.
    fn disconnected(&self);
    /// Redis frees the value: called exactly once, whatever happened before.
    fn freed(self);
}

/// A client blocked by `block_on_key`, to answer from outside its callbacks.
#[derive(Clone, Copy, Debug)]
pub struct BlockedClient(*mut raw::RedisModuleBlockedClient);

// SAFETY: a handle Redis gave us, used only on the main thread; the waiting queue that
// keeps it sits in a static (hence `Sync`) but is never touched from another thread.
unsafe impl Send for BlockedClient {}
unsafe impl Sync for BlockedClient {}

/// Blocks the calling client on `key` until `T::ready` answers, `answer_blocked` answers
/// for it, or `timeout_ms` pass (0: no limit). Raw: the crate's blocking API cannot block
/// on keys, which is what gives `CLIENT UNBLOCK`, time-outs and cluster redirection as
/// Redis does them for its own blocking commands.
pub fn block_on_key<T: Blocked>(ctx: &Context, key: &RedisString, timeout_ms: i64, private: T) -> Result<BlockedClient, T> {
    // SAFETY: the client is blocked with a pointer that only our callbacks below see;
    // they cast it back to `T`, and `free` reclaims it once.
    unsafe {
        let (Some(block), Some(on_disconnect)) = (raw::RedisModule_BlockClientOnKeys, raw::RedisModule_SetDisconnectCallback) else {
            return Err(private);
        };
        let mut keys = [key.inner];
        let bc = block(
            ctx.ctx,
            Some(blocked_ready::<T>),
            Some(blocked_timeout::<T>),
            Some(blocked_free::<T>),
            timeout_ms,
            keys.as_mut_ptr(),
            1,
            Box::into_raw(Box::new(private)).cast(),
        );
        on_disconnect(bc, Some(blocked_disconnected::<T>));
        Ok(BlockedClient(bc))
    }
}

/// Unblocks a client blocked by `block_on_key` from a main-thread context other than
/// its callbacks, so that Redis never has to retry every client blocked on the key to
/// find the one to serve. Redis answers a client blocked on keys and unblocked so
/// through its timeout callback, at once (documented for `RedisModule_UnblockClient`):
/// `T::timed_out` must find the answer left for it. Raw: no crate wrapper.
pub fn unblock(client: BlockedClient) {
    // SAFETY: `client` is still blocked: its ticket was queued until now and leaves the
    // queue on every other way out (time-out, disconnection, free).
    unsafe {
        if let Some(unblock) = raw::RedisModule_UnblockClient {
            unblock(client.0, ptr::null_mut());
        }
    }
}

unsafe fn blocked_private<'a, T>(ctx: *mut raw::RedisModuleCtx) -> Option<&'a T> {
    raw::RedisModule_GetBlockedClientPrivateData.and_then(|get| get(ctx).cast::<T>().as_ref())
}

unsafe extern "C" fn blocked_ready<T: Blocked>(ctx: *mut raw::RedisModuleCtx, _: *mut *mut raw::RedisModuleString, _: c_int) -> c_int {
    match blocked_private::<T>(ctx) {
        Some(p) if p.ready(&Context::new(ctx)) => OK,
        _ => ERR,
    }
}

unsafe extern "C" fn blocked_timeout<T: Blocked>(ctx: *mut raw::RedisModuleCtx, _: *mut *mut raw::RedisModuleString, _: c_int) -> c_int {
    if let Some(p) = blocked_private::<T>(ctx) {
        p.timed_out(&Context::new(ctx));
    }
    OK
}

unsafe extern "C" fn blocked_disconnected<T: Blocked>(ctx: *mut raw::RedisModuleCtx, _: *mut raw::RedisModuleBlockedClient) {
    if let Some(p) = blocked_private::<T>(ctx) {
        p.disconnected();
    }
}

unsafe extern "C" fn blocked_free<T: Blocked>(_: *mut raw::RedisModuleCtx, private: *mut c_void) {
    if !private.is_null() {
        Box::from_raw(private.cast::<T>()).freed();
    }
}

// ---- replication and the AOF ------------------------------------------------------

/// Up to this many arguments after the key; the variadic calls below are spelled out
/// per count.
pub const MAX_EFFECT_ARGS: usize = 7;

/// Calls a variadic replicate-like function with format "s" + "b" per argument.
macro_rules! variadic {
    ($f:expr, ($($head:expr),*), $key:expr, $args:expr) => {{
        const FORMATS: [&CStr; MAX_EFFECT_ARGS + 1] =
            [c"s", c"sb", c"sbb", c"sbbb", c"sbbbb", c"sbbbbb", c"sbbbbbb", c"sbbbbbbb"];
        let a: &[&[u8]] = $args;
        let p = |i: usize| a[i].as_ptr();
        let l = |i: usize| a[i].len();
        let fmt = FORMATS[a.len()].as_ptr();
        match a.len() {
            0 => $f($($head,)* fmt, $key),
            1 => $f($($head,)* fmt, $key, p(0), l(0)),
            2 => $f($($head,)* fmt, $key, p(0), l(0), p(1), l(1)),
            3 => $f($($head,)* fmt, $key, p(0), l(0), p(1), l(1), p(2), l(2)),
            4 => $f($($head,)* fmt, $key, p(0), l(0), p(1), l(1), p(2), l(2), p(3), l(3)),
            5 => $f($($head,)* fmt, $key, p(0), l(0), p(1), l(1), p(2), l(2), p(3), l(3), p(4), l(4)),
            6 => $f($($head,)* fmt, $key, p(0), l(0), p(1), l(1), p(2), l(2), p(3), l(3), p(4), l(4), p(5), l(5)),
            7 => $f($($head,)* fmt, $key, p(0), l(0), p(1), l(1), p(2), l(2), p(3), l(3), p(4), l(4), p(5), l(5), p(6), l(6)),
            n => panic!("an effect with {n} arguments: raise MAX_EFFECT_ARGS"),
        };
    }};
}

/// `cmd key args...` into the replication stream and the AOF, every argument a byte
/// string. Raw: `RedisModule_Replicate` is variadic, and the crate's wrapper builds a
/// `CString` per argument.
pub fn replicate(ctx: &Context, cmd: &CStr, key: &RedisString, args: &[&[u8]]) {
    // SAFETY: the format holds one `s` then one `b` (pointer, length) per argument.
    unsafe {
        if let Some(replicate) = raw::RedisModule_Replicate {
            variadic!(replicate, (ctx.ctx, cmd.as_ptr()), key.inner, args);
        }
    }
}

/// `cmd key args...` into a rewritten AOF. Raw: no crate wrapper.
pub fn emit_aof(io: &mut AofOut, cmd: &CStr, args: &[&[u8]]) {
    // SAFETY: as `replicate`; `io` is the rewrite's handle for this key.
    unsafe {
        if let Some(emit) = raw::RedisModule_EmitAOF {
            variadic!(emit, (io.io, cmd.as_ptr()), io.key, args);
        }
    }
}


// ---- data types ------------------------------------------------------------------

/// What a value of one of the module's data types does for Redis's callbacks. The
/// callbacks themselves (`type_methods`) are raw: Redis calls them with raw pointers.
pub trait TypeValue: Sized {
    /// How many values of the type are alive (for `INFO`): the callbacks below and the
    /// one place values are stored keep it.
    const LIVE: &'static std::sync::atomic::AtomicI64;
    fn rdb_save(&self, out: &mut RdbOut);
    /// `None` refuses the payload (a corrupt RESTORE fails instead of crashing).
    fn rdb_load(input: &mut RdbIn, encver: i32) -> Option<Self>;
    fn aof_rewrite(&self, out: &mut AofOut);
    fn digest(&self, out: &mut DigestOut);
    fn mem_usage(&self) -> usize;
    /// Redis took the key out of the keyspace (deleted, expired, evicted, overwritten,
    /// renamed or moved away).
    fn unlinked(&self, _db: Db, _key: &[u8]) {}
}

/// Module-global data saved in RDB files beside the keys (aux data).
pub trait AuxData {
    fn save(out: &mut RdbOut);
    fn load(input: &mut RdbIn, encver: i32) -> bool;
}

/// The type-methods layout Redis 7.0 knows (it reads no further).
const TYPE_METHOD_VERSION: u64 = 4;

/// The callbacks of a data type whose values are `T`.
pub const fn type_methods<T: TypeValue>() -> raw::RedisModuleTypeMethods {
    raw::RedisModuleTypeMethods {
        version: TYPE_METHOD_VERSION,
        rdb_load: Some(rdb_load::<T>),
        rdb_save: Some(rdb_save::<T>),
        aof_rewrite: Some(aof_rewrite::<T>),
        mem_usage: Some(mem_usage::<T>),
        digest: Some(digest::<T>),
        free: Some(free::<T>),
        aux_load: None,
        aux_save: None,
        aux_save_triggers: 0,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: Some(unlink::<T>),
        copy2: None,
        aux_save2: None,
    }
}

/// As `type_methods`, carrying `A` as aux data saved before the keys.
pub const fn type_methods_with_aux<T: TypeValue, A: AuxData>() -> raw::RedisModuleTypeMethods {
    raw::RedisModuleTypeMethods {
        aux_load: Some(aux_load::<A>),
        aux_save: Some(aux_save::<A>),
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as c_int,
        ..type_methods::<T>()
    }
}

/// Saving: values and aux data into an RDB payload.
pub struct RdbOut {
    io: *mut raw::RedisModuleIO,
}

impl RdbOut {
    pub fn bytes(&mut self, b: &[u8]) {
        raw::save_slice(self.io, b);
    }
    pub fn signed(&mut self, v: i64) {
        raw::save_signed(self.io, v);
    }
    pub fn unsigned(&mut self, v: u64) {
        raw::save_unsigned(self.io, v);
    }
}

/// Loading: each read is `None` once the payload ran short or is corrupt (Redis reports
/// that instead of aborting, since the module handles IO errors).
pub struct RdbIn {
    io: *mut raw::RedisModuleIO,
}

impl RdbIn {
    pub fn bytes(&mut self) -> Option<Vec<u8>> {
        raw::load_string_buffer(self.io).ok().map(|b| b.as_ref().to_vec())
    }
    pub fn signed(&mut self) -> Option<i64> {
        raw::load_signed(self.io).ok()
    }
    pub fn unsigned(&mut self) -> Option<u64> {
        raw::load_unsigned(self.io).ok()
    }
}

/// A rewritten AOF, for one key.
pub struct AofOut {
    io: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
}

pub struct DigestOut {
    md: *mut raw::RedisModuleDigest,
}

impl DigestOut {
    pub fn signed(&mut self, v: i64) {
        // SAFETY: `md` is the digest Redis handed the callback.
        unsafe {
            if let Some(add) = raw::RedisModule_DigestAddLongLong {
                add(self.md, v);
            }
        }
    }
    pub fn bytes(&mut self, b: &[u8]) {
        // SAFETY: as above; Redis reads `b` and does not keep it.
        unsafe {
            if let Some(add) = raw::RedisModule_DigestAddStringBuffer {
                add(self.md, b.as_ptr().cast_mut().cast(), b.len());
            }
        }
    }
}

unsafe fn value_ref<'a, T>(value: *const c_void) -> Option<&'a T> {
    value.cast::<T>().as_ref()
}

unsafe extern "C" fn rdb_load<T: TypeValue>(io: *mut raw::RedisModuleIO, encver: c_int) -> *mut c_void {
    match T::rdb_load(&mut RdbIn { io }, encver) {
        Some(value) => {
            T::LIVE.fetch_add(1, Ordering::Relaxed);
            Box::into_raw(Box::new(value)).cast()
        }
        None => ptr::null_mut(),
    }
}

unsafe extern "C" fn rdb_save<T: TypeValue>(io: *mut raw::RedisModuleIO, value: *mut c_void) {
    if let Some(v) = value_ref::<T>(value) {
        v.rdb_save(&mut RdbOut { io });
    }
}

unsafe extern "C" fn aof_rewrite<T: TypeValue>(io: *mut raw::RedisModuleIO, key: *mut raw::RedisModuleString, value: *mut c_void) {
    if let Some(v) = value_ref::<T>(value) {
        v.aof_rewrite(&mut AofOut { io, key });
    }
}

unsafe extern "C" fn mem_usage<T: TypeValue>(value: *const c_void) -> usize {
    value_ref::<T>(value).map_or(0, T::mem_usage)
}

unsafe extern "C" fn digest<T: TypeValue>(md: *mut raw::RedisModuleDigest, value: *mut c_void) {
    if let Some(v) = value_ref::<T>(value) {
        let mut out = DigestOut { md };
        v.digest(&mut out);
        if let Some(end) = raw::RedisModule_DigestEndSequence {
            end(md);
        }
    }
}

unsafe extern "C" fn free<T: TypeValue>(value: *mut c_void) {
    if !value.is_null() {
        T::LIVE.fetch_sub(1, Ordering::Relaxed);
        drop(Box::from_raw(value.cast::<T>()));
    }
}

unsafe extern "C" fn unlink<T: TypeValue>(ctx: *mut raw::RedisModuleKeyOptCtx, value: *const c_void) {
    let (Some(name), Some(db), Some(v)) = (raw::RedisModule_GetKeyNameFromOptCtx, raw::RedisModule_GetDbIdFromOptCtx, value_ref::<T>(value)) else {
        return;
    };
    v.unlinked(db(ctx), RedisString::string_as_slice(name(ctx)));
}

unsafe extern "C" fn aux_save<A: AuxData>(io: *mut raw::RedisModuleIO, _when: c_int) {
    A::save(&mut RdbOut { io });
}

unsafe extern "C" fn aux_load<A: AuxData>(io: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    if A::load(&mut RdbIn { io }, encver) {
        OK
    } else {
        ERR
    }
}

// ---- keyspace and server events -----------------------------------------------------

/// What the module does about the server's events and keyspace events.
pub trait ServerEvents {
    /// The event loop is about to sleep.
    fn before_sleep(ctx: &Context);
    /// This server became a master, or a replica.
    /// `now_master`: this server just became a master (promoted); false: a replica.
    fn role_changed(ctx: &Context, now_master: bool);
    /// FLUSHDB of `db`, or FLUSHALL (`None`), is about to empty the keyspace.
    fn flushing(db: Option<Db>);
    fn swapped_dbs(a: Db, b: Db);
    /// Loading (RDB, AOF, full sync) ended.
    fn loaded(ctx: &Context);
    /// Something happened after which a replication stream may exist: a fork (a
    /// replica's full sync forks), a replica came or went, loading started.
    fn stream_may_exist();
    /// The fields of the module's INFO section. For a crash report, only what can be
    /// read without taking a lock (the crash may have happened while one was held).
    fn info(for_crash_report: bool) -> Vec<InfoField>;
    /// A keyspace event of the subscribed classes: called for every such event of every
    /// client, so it must drop what it does not need at once.
    fn keyspace(ctx: &Context, event: &[u8], key: &[u8]);
}

/// Subscribes `E` to the server events. Raw: the crate's server-event registration
/// needs its proc macros, which do not load on Redis 7.0.
pub fn subscribe_server_events<E: ServerEvents>(ctx: &Context) -> bool {
    let events: [(u64, ServerEventCallback); 7] = [
        (raw::REDISMODULE_EVENT_EVENTLOOP, event_loop::<E>),
        (raw::REDISMODULE_EVENT_REPLICATION_ROLE_CHANGED, role_changed::<E>),
        (raw::REDISMODULE_EVENT_FLUSHDB, flushdb::<E>),
        (raw::REDISMODULE_EVENT_SWAPDB, swapdb::<E>),
        (raw::REDISMODULE_EVENT_LOADING, loading::<E>),
        (raw::REDISMODULE_EVENT_FORK_CHILD, stream_may_exist::<E>),
        (raw::REDISMODULE_EVENT_REPLICA_CHANGE, stream_may_exist::<E>),
    ];
    events.into_iter().all(|(id, callback)| {
        let event = raw::RedisModuleEvent { id, dataver: 1 };
        // SAFETY: load-time context; Redis copies the event struct.
        unsafe { raw::RedisModule_SubscribeToServerEvent.is_some_and(|sub| sub(ctx.ctx, event, Some(callback)) == OK) }
    })
}

type ServerEventCallback = unsafe extern "C" fn(*mut raw::RedisModuleCtx, raw::RedisModuleEvent, u64, *mut c_void);

unsafe extern "C" fn event_loop<E: ServerEvents>(ctx: *mut raw::RedisModuleCtx, _: raw::RedisModuleEvent, sub: u64, _: *mut c_void) {
    if sub == raw::REDISMODULE_SUBEVENT_EVENTLOOP_BEFORE_SLEEP {
        E::before_sleep(&Context::new(ctx));
    }
}

unsafe extern "C" fn role_changed<E: ServerEvents>(ctx: *mut raw::RedisModuleCtx, _: raw::RedisModuleEvent, sub: u64, _: *mut c_void) {
    E::role_changed(&Context::new(ctx), sub == raw::REDISMODULE_EVENT_REPLROLECHANGED_NOW_MASTER);
}

unsafe extern "C" fn flushdb<E: ServerEvents>(_: *mut raw::RedisModuleCtx, _: raw::RedisModuleEvent, sub: u64, data: *mut c_void) {
    if sub != raw::REDISMODULE_SUBEVENT_FLUSHDB_START {
        return;
    }
    if let Some(info) = data.cast::<raw::RedisModuleFlushInfo>().as_ref() {
        E::flushing((info.dbnum >= 0).then_some(info.dbnum));
    }
}

unsafe extern "C" fn swapdb<E: ServerEvents>(_: *mut raw::RedisModuleCtx, _: raw::RedisModuleEvent, _: u64, data: *mut c_void) {
    if let Some(info) = data.cast::<raw::RedisModuleSwapDbInfo>().as_ref() {
        E::swapped_dbs(info.dbnum_first, info.dbnum_second);
    }
}

unsafe extern "C" fn loading<E: ServerEvents>(ctx: *mut raw::RedisModuleCtx, _: raw::RedisModuleEvent, sub: u64, _: *mut c_void) {
    E::stream_may_exist();
    if sub == raw::REDISMODULE_SUBEVENT_LOADING_ENDED {
        E::loaded(&Context::new(ctx));
    }
}

unsafe extern "C" fn stream_may_exist<E: ServerEvents>(_: *mut raw::RedisModuleCtx, _: raw::RedisModuleEvent, _: u64, _: *mut c_void) {
    E::stream_may_exist();
}

/// One field of the module's INFO section; Redis names it `fencelock_<name>`.
pub enum InfoField {
    Int(&'static CStr, i64),
    Uint(&'static CStr, u64),
}

/// Registers `E::info` as the module's INFO section (`INFO fencelock`, `INFO modules`,
/// `INFO everything`). Raw: no crate wrapper that loads on 7.0.
pub fn register_info<E: ServerEvents>(ctx: &Context) -> bool {
    // SAFETY: load-time context.
    unsafe { raw::RedisModule_RegisterInfoFunc.is_some_and(|register| register(ctx.ctx, Some(info_func::<E>)) == OK) }
}

unsafe extern "C" fn info_func<E: ServerEvents>(info: *mut raw::RedisModuleInfoCtx, for_crash_report: c_int) {
    let (Some(section), Some(int), Some(uint)) =
        (raw::RedisModule_InfoAddSection, raw::RedisModule_InfoAddFieldLongLong, raw::RedisModule_InfoAddFieldULongLong)
    else {
        return;
    };
    // A null name: the section named after the module.
    if section(info, ptr::null()) != OK {
        return;
    }
    for field in E::info(for_crash_report != 0) {
        match field {
            InfoField::Int(name, v) => int(info, name.as_ptr(), v),
            InfoField::Uint(name, v) => uint(info, name.as_ptr(), v),
        };
    }
}

/// Fires keyspace event `event` on `key` (in the selected db): of the module class (`d`
/// in `notify-keyspace-events`) when `module`, else generic (`g`, as `del`). Raw: the
/// crate's wrapper takes the event as `&str` and builds a C string per call.
pub fn notify(ctx: &Context, module: bool, event: &CStr, key: &RedisString) {
    let class = if module { raw::REDISMODULE_NOTIFY_MODULE } else { raw::REDISMODULE_NOTIFY_GENERIC } as c_int;
    // SAFETY: live context and key; Redis copies the event name.
    unsafe {
        if let Some(notify) = raw::RedisModule_NotifyKeyspaceEvent {
            notify(ctx.ctx, class, event.as_ptr(), key.inner);
        }
    }
}

/// A callback for `subscribe_keyspace`.
pub type KeyspaceCallback = unsafe extern "C" fn(*mut raw::RedisModuleCtx, c_int, *const c_char, *mut raw::RedisModuleString) -> c_int;

/// The keyspace callback of `E`. Raw: the crate's wrapper converts every event name to
/// a checked `&str` and builds a context before the module can drop the event.
pub fn keyspace_callback<E: ServerEvents>() -> KeyspaceCallback {
    keyspace_event::<E>
}

unsafe extern "C" fn keyspace_event<E: ServerEvents>(ctx: *mut raw::RedisModuleCtx, _: c_int, event: *const c_char, key: *mut raw::RedisModuleString) -> c_int {
    if !event.is_null() && !key.is_null() {
        E::keyspace(&Context::new(ctx), CStr::from_ptr(event).to_bytes(), RedisString::string_as_slice(key));
    }
    OK
}

/// The keyspace classes a subscription asks for: the generic one (RENAME, MOVE,
/// RESTORE...) and loading.
pub const ARRIVAL_CLASSES: c_int = (raw::REDISMODULE_NOTIFY_GENERIC | raw::REDISMODULE_NOTIFY_LOADED) as c_int;

/// A context of the module's own, for calls that need the module but come where Redis
/// hands us no context (RDB loading). Raw: the crate keeps its own private.
pub struct ModuleContext(AtomicPtr<raw::RedisModuleCtx>);

impl ModuleContext {
    pub const fn new() -> Self {
        ModuleContext(AtomicPtr::new(ptr::null_mut()))
    }

    /// Keeps a detached context of the module, at load.
    pub fn init(&self, ctx: &Context) {
        // SAFETY: the load-time context; the detached one lives as long as the server.
        let detached = unsafe { raw::RedisModule_GetDetachedThreadSafeContext.map_or(ptr::null_mut(), |get| get(ctx.ctx)) };
        self.0.store(detached, Ordering::Relaxed);
    }

    /// Subscribes `callback` to the keyspace events of `classes`. Raw: the crate
    /// subscribes only from its load macro.
    pub fn subscribe_keyspace(&self, classes: c_int, callback: KeyspaceCallback) -> bool {
        let ctx = self.0.load(Ordering::Relaxed);
        if ctx.is_null() {
            return false;
        }
        // SAFETY: a detached context of this module; Redis keeps only its module.
        unsafe { raw::RedisModule_SubscribeToKeyspaceEvents.is_some_and(|sub| sub(ctx, classes, Some(callback)) == OK) }
    }
}

// ---- running another command (FENCE.CALL) ---------------------------------------------

impl Args {
    /// Every argument as Redis passed it, the command name first.
    pub fn raw(&self) -> &[*mut raw::RedisModuleString] {
        if self.argc == 0 {
            return &[];
        }
        // SAFETY: `argv` holds `argc` strings for the command call (see `new`).
        unsafe { std::slice::from_raw_parts(self.argv, self.argc) }
    }
}

/// Whether Redis only asks for the command's keys (a `getkeys-api` command).
pub fn is_keys_position_request(ctx: &Context) -> bool {
    // SAFETY: live context.
    unsafe { raw::RedisModule_IsKeysPositionRequest.is_some_and(|f| f(ctx.ctx) != 0) }
}

/// Reports argument `pos` as a key with key-spec `flags`.
pub fn key_at_pos(ctx: &Context, pos: c_int, flags: c_int) {
    // SAFETY: live context in a keys-position request.
    unsafe {
        match (raw::RedisModule_KeyAtPosWithFlags, raw::RedisModule_KeyAtPos) {
            (Some(with_flags), _) => with_flags(ctx.ctx, pos, flags),
            (None, Some(plain)) => plain(ctx.ctx, pos),
            (None, None) => {}
        }
    }
}

/// The key positions (in `argv`, the command name at 0) and key flags of the command in
/// `argv`; none for an unknown command or a wrong arity. Raw: no crate wrapper.
pub fn command_keys(ctx: &Context, argv: &[*mut raw::RedisModuleString]) -> Vec<(c_int, c_int)> {
    // SAFETY: `argv` are live strings; Redis allocates both arrays, freed here.
    unsafe {
        let (Some(get), Some(free)) = (raw::RedisModule_GetCommandKeysWithFlags, raw::RedisModule_Free) else { return vec![] };
        let mut num: c_int = 0;
        let mut flags: *mut c_int = ptr::null_mut();
        let positions = get(ctx.ctx, argv.as_ptr().cast_mut(), argv.len() as c_int, &mut num, &mut flags);
        if positions.is_null() {
            return vec![];
        }
        let keys = (0..num.max(0) as usize).map(|i| (*positions.add(i), if flags.is_null() { 0 } else { *flags.add(i) })).collect();
        free(positions.cast());
        if !flags.is_null() {
            free(flags.cast());
        }
        keys
    }
}

/// A reply of `call`, freed when dropped.
pub struct CallReply(*mut raw::RedisModuleCallReply);

impl Drop for CallReply {
    fn drop(&mut self) {
        // SAFETY: a reply `call` got and nobody freed.
        unsafe {
            if let Some(free) = raw::RedisModule_FreeCallReply {
                free(self.0);
            }
        }
    }
}

impl CallReply {
    /// Sends this reply, as it is, to the client of `ctx`.
    pub fn forward(&self, ctx: &Context) {
        // SAFETY: live context and reply.
        unsafe {
            if let Some(reply) = raw::RedisModule_ReplyWithCallReply {
                reply(ctx.ctx, self.0);
            }
        }
    }

    /// Element `i` of an array reply.
    fn element(&self, i: usize) -> Option<*mut raw::RedisModuleCallReply> {
        // SAFETY: live reply; Redis checks the type and the index, and the element lives
        // as long as this reply.
        unsafe {
            let el = raw::RedisModule_CallReplyArrayElement?(self.0, i);
            (!el.is_null()).then_some(el)
        }
    }
}

/// Runs `argv` (the command name first) as the caller would: its ACL permissions checked
/// for the command and its keys (`C`), refused on OOM when the command may grow memory
/// (`M`), replicated and written to the AOF as Redis would when called directly (`!`),
/// errors as replies (`E`). None when the server refused the call itself. Raw: the
/// crate's call options need a newer server.
pub fn call_as_caller(ctx: &Context, argv: &[*mut raw::RedisModuleString]) -> Option<CallReply> {
    let (name, args) = argv.split_first()?;
    // SAFETY: `name` is a live string; Redis reads the format, then `args.len()` strings.
    unsafe {
        let call = raw::RedisModule_Call?;
        let mut len = 0;
        let bytes = raw::RedisModule_StringPtrLen?(*name, &mut len);
        let name = CString::new(std::slice::from_raw_parts(bytes.cast::<u8>(), len)).ok()?;
        let reply = call(ctx.ctx, name.as_ptr(), c"!CEMv".as_ptr(), args.as_ptr(), args.len());
        (!reply.is_null()).then(|| CallReply(reply))
    }
}

/// What `COMMAND INFO name` says of a command: its arity, its flags, and whether it has
/// subcommands (a container such as CONFIG); None for an unknown command.
pub fn command_info(ctx: &Context, name: &[u8]) -> Option<(i64, Vec<String>, bool)> {
    // SAFETY: Redis copies the arguments; every element read lives as long as `reply`.
    unsafe {
        let call = raw::RedisModule_Call?;
        let reply = call(ctx.ctx, c"COMMAND".as_ptr(), c"cb".as_ptr(), c"INFO".as_ptr(), name.as_ptr(), name.len());
        if reply.is_null() {
            return None;
        }
        let reply = CallReply(reply);
        let entry = reply.element(0)?;
        if raw::RedisModule_CallReplyType?(entry) != raw::REDISMODULE_REPLY_ARRAY as c_int {
            return None;
        }
        let at = |i| {
            let el = raw::RedisModule_CallReplyArrayElement?(entry, i);
            (!el.is_null()).then_some(el)
        };
        let arity = raw::RedisModule_CallReplyInteger?(at(1)?);
        let flags_reply = at(2)?;
        let n = raw::RedisModule_CallReplyLength?(flags_reply);
        let mut flags = Vec::with_capacity(n);
        for i in 0..n {
            if let Some(flag) = reply_text(raw::RedisModule_CallReplyArrayElement?(flags_reply, i)) {
                flags.push(flag);
            }
        }
        // Element 9 (7.0+): the subcommands.
        let container = at(9).is_some_and(|subs| raw::RedisModule_CallReplyLength.is_some_and(|len| len(subs) > 0));
        Some((arity, flags, container))
    }
}

/// The value of the server config `name` (`CONFIG GET`), None when there is none.
/// Raw: the crate's call wrapper cannot run at load on Redis 7.0.
pub fn server_config(ctx: &Context, name: &CStr) -> Option<String> {
    // SAFETY: Redis copies the arguments; the element read lives as long as `reply`.
    unsafe {
        let call = raw::RedisModule_Call?;
        let reply = call(ctx.ctx, c"CONFIG".as_ptr(), c"cc".as_ptr(), c"GET".as_ptr(), name.as_ptr());
        if reply.is_null() {
            return None;
        }
        let reply = CallReply(reply);
        reply_text(reply.element(1)?)
    }
}

/// The text of a string reply element (lossy UTF-8); None for a null or non-string one.
///
/// # Safety
/// `el` is null or an element of a live reply.
unsafe fn reply_text(el: *mut raw::RedisModuleCallReply) -> Option<String> {
    if el.is_null() {
        return None;
    }
    let mut len = 0;
    let p = raw::RedisModule_CallReplyStringPtr?(el, &mut len);
    (!p.is_null()).then(|| String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), len)).into_owned())
}

// ---- Redis Cluster -----------------------------------------------------------------

/// True when a write to `key` sent by a client now would run on this node, by Redis's
/// own routing: the node serves the key's slot, and the key is here if the slot is
/// migrating away (else a client is sent on with -ASK). Raw: the crate has no routing
/// call, and only `RedisModule_Call` applies Redis's routing (it refuses with EPERM a
/// command Redis would redirect); `EXISTS` is the cheapest keyed command.
pub fn routes_here(ctx: &Context, key: &RedisString) -> bool {
    // SAFETY: live context and key; the reply is freed by `CallReply`.
    unsafe {
        let Some(call) = raw::RedisModule_Call else { return true };
        let reply = call(ctx.ctx, c"EXISTS".as_ptr(), c"s".as_ptr(), key.inner);
        if reply.is_null() {
            return false;
        }
        drop(CallReply(reply));
        true
    }
}

/// A cluster-bus message handler: the sender's node id and the payload.
pub type ClusterReceiver = fn(sender: &[u8], payload: &[u8]);

static CLUSTER_RECEIVER: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// Has `receiver` called for every message of `type_` this module's peers send over the
/// cluster bus (7.0). Raw: no crate wrapper.
pub fn register_cluster_receiver(ctx: &Context, type_: u8, receiver: ClusterReceiver) -> bool {
    CLUSTER_RECEIVER.store(receiver as *mut (), Ordering::Relaxed);
    // SAFETY: load-time context; the callback is a plain function.
    unsafe {
        raw::RedisModule_RegisterClusterMessageReceiver.is_some_and(|register| {
            register(ctx.ctx, type_, Some(cluster_message));
            true
        })
    }
}

unsafe extern "C" fn cluster_message(_: *mut raw::RedisModuleCtx, sender: *const c_char, _: u8, payload: *const u8, len: u32) {
    let receiver = CLUSTER_RECEIVER.load(Ordering::Relaxed);
    if receiver.is_null() || sender.is_null() || (payload.is_null() && len > 0) {
        return;
    }
    // SAFETY: stored from a `ClusterReceiver` above; Redis passes a node id of
    // REDISMODULE_NODE_ID_LEN bytes and `len` payload bytes, live during the call.
    let receiver: ClusterReceiver = std::mem::transmute::<*mut (), ClusterReceiver>(receiver);
    let sender = std::slice::from_raw_parts(sender.cast::<u8>(), raw::REDISMODULE_NODE_ID_LEN as usize);
    let payload = if len == 0 { &[][..] } else { std::slice::from_raw_parts(payload, len as usize) };
    receiver(sender, payload);
}

/// Sends `payload` as a message of `type_` to this module on every other node of the
/// cluster. False outside a cluster. Raw: no crate wrapper.
pub fn broadcast_cluster_message(ctx: &Context, type_: u8, payload: &[u8]) -> bool {
    // SAFETY: Redis copies the payload; a null target means every node.
    unsafe {
        raw::RedisModule_SendClusterMessage.is_some_and(|send| {
            send(ctx.ctx, ptr::null(), type_, payload.as_ptr().cast(), payload.len() as u32) == OK
        })
    }
}

// ---- configs -----------------------------------------------------------------------

/// A numeric module config kept in a static: Redis reads and writes it through the
/// callbacks below, after checking the range itself.
pub struct NumericConfig {
    /// Without the module's prefix: Redis names it `fencelock.<name>`.
    pub name: &'static CStr,
    pub value: &'static std::sync::atomic::AtomicI64,
    pub default: i64,
    pub min: i64,
    pub max: i64,
}

/// Registers `config` (7.0). Raw: the crate's config macros need its proc macros.
pub fn register_numeric_config(ctx: &Context, config: &'static NumericConfig) -> Result<(), String> {
    // SAFETY: load-time context; `config` is static, so the pointer Redis keeps as private
    // data stays valid, and the callbacks only read it as a `NumericConfig`.
    unsafe {
        let register = raw::RedisModule_RegisterNumericConfig.ok_or("RedisModule_RegisterNumericConfig is missing")?;
        let privdata = (config as *const NumericConfig).cast_mut().cast::<c_void>();
        let flags = raw::REDISMODULE_CONFIG_DEFAULT;
        if register(ctx.ctx, config.name.as_ptr(), config.default, flags, config.min, config.max, Some(config_get), Some(config_set), None, privdata) != OK {
            return Err(format!("could not register config {}", config.name.to_string_lossy()));
        }
    }
    Ok(())
}

/// Applies the config values given at load. Raw: no crate wrapper.
pub fn load_configs(ctx: &Context) -> Result<(), String> {
    // SAFETY: load-time context, after every config is registered.
    unsafe {
        match raw::RedisModule_LoadConfigs {
            Some(load) if load(ctx.ctx) == OK => Ok(()),
            Some(_) => Err("a config value given at load was refused".into()),
            None => Err("RedisModule_LoadConfigs is missing".into()),
        }
    }
}

unsafe extern "C" fn config_get(_: *const c_char, privdata: *mut c_void) -> std::ffi::c_longlong {
    privdata.cast::<NumericConfig>().as_ref().map_or(0, |c| c.value.load(Ordering::Relaxed))
}

unsafe extern "C" fn config_set(_: *const c_char, value: std::ffi::c_longlong, privdata: *mut c_void, _: *mut *mut raw::RedisModuleString) -> c_int {
    match privdata.cast::<NumericConfig>().as_ref() {
        Some(c) => {
            c.value.store(value, Ordering::Relaxed);
            OK
        }
        None => ERR,
    }
}

// ---- commands ----------------------------------------------------------------------

pub type CommandFunc = unsafe extern "C" fn(*mut raw::RedisModuleCtx, *mut *mut raw::RedisModuleString, c_int) -> c_int;

/// The arguments Redis passed a command, the name first, each wrapped only when read.
/// The crate's `decode_args` wraps them all up front into a vector, an allocation and a
/// reference taken through the context per argument on every call; this takes each
/// reference directly (no context: nothing to track) and allocates nothing.
pub struct Args {
    argv: *mut *mut raw::RedisModuleString,
    argc: usize,
    at: usize,
}

impl Args {
    /// # Safety
    /// `argv` holds `argc` strings that live for the command call.
    pub unsafe fn new(argv: *mut *mut raw::RedisModuleString, argc: c_int) -> Args {
        let argc = if argv.is_null() { 0 } else { argc.max(0) as usize };
        Args { argv, argc, at: 0 }
    }
}

impl Iterator for Args {
    type Item = RedisString;

    fn next(&mut self) -> Option<RedisString> {
        if self.at == self.argc {
            return None;
        }
        // SAFETY: within `argc`; the string is retained, so it may outlive the call.
        let arg = unsafe { *self.argv.add(self.at) };
        self.at += 1;
        Some(RedisString::new(None, arg))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.argc - self.at, Some(self.argc - self.at))
    }
}

impl ExactSizeIterator for Args {}

/// The C entry point Redis calls for a command whose handler is `$run: fn(&Context,
/// Args) -> RedisResult`. Raw: Redis calls it with raw pointers.
#[macro_export]
macro_rules! command_entry {
    ($run:path) => {{
        unsafe extern "C" fn call(
            ctx: *mut redis_module::raw::RedisModuleCtx,
            argv: *mut *mut redis_module::raw::RedisModuleString,
            argc: std::ffi::c_int,
        ) -> std::ffi::c_int {
            let context = redis_module::Context::new(ctx);
            let args = $crate::ffi::Args::new(argv, argc);
            context.reply($run(&context, args)) as std::ffi::c_int
        }
        call as $crate::ffi::CommandFunc
    }};
}

/// Creates a command and returns its handle for `set_command_info`. Raw: the crate's
/// command macros cannot declare arity, key specs or docs, and fail on Redis 7.0.
pub fn create_command(ctx: &Context, name: &CStr, func: CommandFunc, flags: &CStr) -> Result<*mut raw::RedisModuleCommand, String> {
    let text = name.to_string_lossy();
    // SAFETY: load-time context; Redis copies the name and flags.
    unsafe {
        let create = raw::RedisModule_CreateCommand.ok_or("RedisModule_CreateCommand is missing")?;
        // The key positions given here are replaced by the key spec where the server
        // takes one (`set_command_info`).
        if create(ctx.ctx, name.as_ptr(), Some(func), flags.as_ptr(), 1, 1, 1) != OK {
            return Err(format!("could not create command {text}"));
        }
        Ok(raw::RedisModule_GetCommand.map_or(ptr::null_mut(), |get| get(ctx.ctx, name.as_ptr())))
    }
}

/// How a command treats its one key (the flags of its key spec).
/// A command's keys: the key at argument 1 with `flags`, and, from `variable_from` on,
/// the keys of the command it runs (found by its getkeys callback).
pub struct KeySpecs {
    pub flags: u64,
    pub variable_from: Option<c_int>,
}

pub fn set_command_info(
    command: *mut raw::RedisModuleCommand,
    arity: c_int,
    keys: KeySpecs,
    summary: &CStr,
    complexity: &CStr,
    since: &CStr,
    args: &mut [raw::RedisModuleCommandArg],
) -> bool {
    // Redis steps through the arrays by the sizes given here.
    static VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
        version: 1,
        sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
        sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
        sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
    };
    let Some(set_info) = (unsafe { raw::RedisModule_SetCommandInfo }) else { return true };
    if command.is_null() {
        return true;
    }
    // Both arrays end with a zeroed entry; Redis copies everything during the call.
    // SAFETY: all-zero is the documented terminator of both arrays.
    let mut key_specs = [
        raw::RedisModuleCommandKeySpec {
            notes: ptr::null(),
            flags: keys.flags,
            begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
            bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
                index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos: 1 },
            },
            find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
            fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 { lastkey: 0, keystep: 1, limit: 0 },
            },
        },
        unsafe { std::mem::zeroed() },
        unsafe { std::mem::zeroed() },
    ];
    // Keys found only by the command's getkeys callback (another command's, run behind
    // it): a spec flagged incomplete makes Redis ask the callback.
    if let Some(pos) = keys.variable_from {
        key_specs[1] = raw::RedisModuleCommandKeySpec {
            notes: c"the keys of the command it runs".as_ptr(),
            flags: (raw::REDISMODULE_CMD_KEY_RW | raw::REDISMODULE_CMD_KEY_INCOMPLETE | raw::REDISMODULE_CMD_KEY_VARIABLE_FLAGS) as u64,
            begin_search_type: raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX,
            bs: raw::RedisModuleCommandKeySpec__bindgen_ty_1 {
                index: raw::RedisModuleCommandKeySpec__bindgen_ty_1__bindgen_ty_1 { pos },
            },
            find_keys_type: raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE,
            fk: raw::RedisModuleCommandKeySpec__bindgen_ty_2 {
                range: raw::RedisModuleCommandKeySpec__bindgen_ty_2__bindgen_ty_1 { lastkey: -1, keystep: 1, limit: 0 },
            },
        };
    }
    let info = raw::RedisModuleCommandInfo {
        version: &VERSION,
        summary: summary.as_ptr(),
        complexity: complexity.as_ptr(),
        since: since.as_ptr(),
        history: ptr::null_mut(),
        tips: ptr::null(),
        arity,
        key_specs: key_specs.as_mut_ptr(),
        args: args.as_mut_ptr(),
    };
    // SAFETY: `info` and its arrays outlive the call; the last `args` entry is zeroed
    // (the caller's duty, checked here).
    debug_assert!(args.last().is_some_and(|a| a.name.is_null()));
    unsafe { set_info(command, &info) == OK }
}

/// One documented argument of a command (`COMMAND DOCS`); `arg_end()` terminates a list.
pub fn command_arg(name: &'static CStr, type_: raw::RedisModuleCommandArgType, key_spec: Option<c_int>, token: Option<&'static CStr>, optional: bool) -> raw::RedisModuleCommandArg {
    command_arg_with(name, type_, key_spec, token, if optional { raw::REDISMODULE_CMD_ARG_OPTIONAL as c_int } else { 0 })
}

/// As `command_arg`, with the argument flags given (`REDISMODULE_CMD_ARG_*`).
pub fn command_arg_with(name: &'static CStr, type_: raw::RedisModuleCommandArgType, key_spec: Option<c_int>, token: Option<&'static CStr>, flags: c_int) -> raw::RedisModuleCommandArg {
    raw::RedisModuleCommandArg {
        name: name.as_ptr(),
        type_,
        key_spec_index: key_spec.unwrap_or(-1),
        token: token.map_or(ptr::null(), CStr::as_ptr),
        summary: ptr::null(),
        since: ptr::null(),
        flags,
        deprecated_since: ptr::null(),
        subargs: ptr::null_mut(),
        display_text: ptr::null(),
    }
}

pub fn arg_end() -> raw::RedisModuleCommandArg {
    // SAFETY: all-zero is the terminator Redis looks for (a null name).
    unsafe { std::mem::zeroed() }
}

/// Puts a command in ACL categories, where the server can (Redis 7.2+). Raw: the crate
/// sets categories only from its macros.
pub fn set_command_categories(command: *mut raw::RedisModuleCommand, categories: &str) -> Result<(), String> {
    let Some(set) = (unsafe { raw::RedisModule_SetCommandACLCategories }) else { return Ok(()) };
    if command.is_null() {
        return Ok(());
    }
    let list = CString::new(categories).map_err(|_| "an ACL category list with a NUL".to_string())?;
    // SAFETY: Redis parses the string during the call.
    if unsafe { set(command, list.as_ptr()) } != OK {
        return Err(format!("the server refused the ACL categories {categories}"));
    }
    Ok(())
}

/// Adds an ACL category of the module's own, where the server can (Redis 7.4+, Valkey
/// 8.0+); only during load. Raw: no crate wrapper outside its macros.
pub fn add_acl_category(ctx: &Context, name: &CStr) -> bool {
    // SAFETY: load-time context; Redis copies the name.
    unsafe { raw::RedisModule_AddACLCategory.is_some_and(|add| add(ctx.ctx, name.as_ptr()) == OK) }
}
