'use strict';

const { EventEmitter } = require('node:events');
const { FencelockError, RedisReplyError, LockLostError, LockNotAcquiredError } = require('./errors');
const {
  now, drift, timer, checkOptions, checkKey, checkOwner, checkInt, checkTtl, checkWait, checkSignal,
  toInt, pairs, MAX_LIMIT,
} = require('./util');

// Node 18.18+ and 20.4+ define Symbol.asyncDispose; older runtimes get the registered
// symbol Node itself would use, so `await using` transpiled by TypeScript still finds it.
const asyncDispose = Symbol.asyncDispose || Symbol.for('nodejs.asyncDispose');

const LOCK_OPTIONS = ['ttl', 'renewInterval', 'watchdog', 'owner', 'onLockLost'];
const ACQUIRE_OPTIONS = ['wait', 'signal'];

// Events that cannot mean this owner lost its hold: somebody's grant or release.
const QUIET_EVENTS = new Set([
  'lock.acquire', 'lock.handoff', 'lock.release',
  'rwlock.acquire', 'rwlock.handoff', 'rwlock.release',
  'sem.acquire', 'sem.handoff', 'sem.release',
]);

// One owner on one key: the unit the server extends (RWLOCK.EXTEND extends every hold of
// an owner, so a read-write lock's two modes share one holder and one watchdog).
class Holder {
  constructor(fl, key, family, opts) {
    this.fl = fl;
    this.key = key;
    this.family = family;
    this.owner = opts.owner === undefined ? fl._newOwner() : checkOwner(opts.owner);
    this.ttl = opts.ttl === undefined ? fl.ttl : checkTtl('ttl', opts.ttl);
    this.watchdog = opts.watchdog === undefined ? fl.watchdog : Boolean(opts.watchdog);
    if (opts.renewInterval !== undefined) {
      this.renewInterval = checkInt('renewInterval', opts.renewInterval, 1, this.ttl - 1);
    } else {
      this.renewInterval = Math.max(1, Math.floor(this.ttl / 3));
    }
    if (this.watchdog && this.renewInterval >= this.ttl) {
      throw new RangeError(`ttl ${this.ttl} is too short to renew before it ends: use a longer ttl or watchdog: false`);
    }
    this.extendCmd = { lock: 'LOCK.EXTEND', rwlock: 'RWLOCK.EXTEND', sem: 'SEM.EXTEND' }[family];
    this.infoCmd = { lock: 'LOCK.INFO', rwlock: 'RWLOCK.INFO', sem: 'SEM.INFO' }[family];
    this.leases = new Set();
    this.tickTimer = null;
    this.deadlineTimer = null;
    this.channel = null;
    this.onEvent = (message) => this._event(String(message));
    this.verifying = false;
    this.verifyAgain = null;
  }

  attach(lease) {
    if (this.leases.has(lease)) return;
    this.leases.add(lease);
    if (this.leases.size > 1) return;
    this.fl._active.add(this);
    this._scheduleTick(this.renewInterval);
    this.channel = this.fl._channel(this.key);
    this.fl._subscribe(this.channel, this.onEvent, this.key);
  }

  detach(lease) {
    if (!this.leases.delete(lease) || this.leases.size > 0) return;
    this.fl._active.delete(this);
    if (this.tickTimer) this.tickTimer.clear();
    if (this.deadlineTimer) this.deadlineTimer.clear();
    this.tickTimer = this.deadlineTimer = null;
    if (this.channel) this.fl._unsubscribe(this.channel, this.onEvent);
    this.channel = null;
  }

  // A timer at the earliest local deadline, independent of the watchdog: it fires even
  // when extends hang (a stalled network) and right after the event loop wakes from a
  // stall longer than the lease.
  armDeadline() {
    if (this.deadlineTimer) this.deadlineTimer.clear();
    this.deadlineTimer = null;
    if (this.leases.size === 0) return;
    let first = Infinity;
    for (const l of this.leases) first = Math.min(first, l._validUntil);
    this.deadlineTimer = timer(first - now(), () => this.checkDeadlines());
  }

  checkDeadlines() {
    const t = now();
    for (const l of [...this.leases]) if (t >= l._validUntil) l._lose('deadline');
    this.armDeadline();
  }

  _scheduleTick(delay) {
    if (this.tickTimer) this.tickTimer.clear();
    this.tickTimer = null;
    if (!this.watchdog || this.leases.size === 0) return;
    this.tickTimer = timer(delay, () => this._tick());
  }

  async _tick() {
    this.tickTimer = null;
    this.checkDeadlines();
    if (this.leases.size === 0) return;
    try {
      await this.extend(this.ttl);
      this._scheduleTick(this.renewInterval);
    } catch {
      // A failed extend (connection dropped, reply timeout) is retried soon on a fresh
      // connection; if none succeeds in time the deadline timer declares the loss.
      this._scheduleTick(Math.min(this.renewInterval, 1000));
    }
  }

  async extend(ttl) {
    const gens = new Map([...this.leases].map((l) => [l, l._generation]));
    if (gens.size === 0) return false;
    const sentAt = now();
    const ok = toInt(await this.fl._send([this.extendCmd, this.key, this.owner, String(ttl)], this.key)) === 1;
    for (const [l, g] of gens) {
      if (l._generation !== g) continue; // released or lost while the extend was out
      if (ok) l._validUntil = sentAt + ttl - drift(ttl);
      else l._lose('extend-refused');
    }
    this.armDeadline();
    return ok;
  }

  async info() {
    return pairs(await this.fl._send([this.infoCmd, this.key], this.key));
  }

  _event(event) {
    if (QUIET_EVENTS.has(event) || this.leases.size === 0) return;
    if (this.verifying) {
      this.verifyAgain = event;
      return;
    }
    this.verifying = true;
    (async () => {
      let ev = event;
      while (ev !== null && this.leases.size > 0) {
        this.verifyAgain = null;
        await this._verify(ev);
        ev = this.verifyAgain;
      }
    })().finally(() => { this.verifying = false; });
  }

  // Events carry the key, not the owner: ask the server whether this owner's holds are
  // still there.
  async _verify(event) {
    const gens = new Map([...this.leases].map((l) => [l, l._generation]));
    let info;
    try {
      info = await this.info();
    } catch {
      return; // the watchdog and the deadline still stand guard
    }
    for (const [l, g] of gens) {
      if (l._generation !== g) continue;
      const hold = l._holdIn(info);
      if (!hold || hold.token !== l.token) l._lose('event', event);
    }
  }
}

class Lease extends EventEmitter {
  constructor(holder, kind) {
    super();
    this._holder = holder;
    this.kind = kind;
    this.holds = 0;
    this.token = null;
    this._validUntil = -Infinity;
    this._generation = 0;
    this._controller = null;
    this._lost = null;
    this._inflight = 0;
    this._cleanup = null;
  }

  get key() { return this._holder.key; }
  get owner() { return this._holder.owner; }
  get ttl() { return this._holder.ttl; }
  get renewInterval() { return this._holder.renewInterval; }
  get held() { return this.holds > 0; }
  // The signal of the current (or last) hold: aborted, with a LockLostError as its
  // reason, when that hold is lost. Release does not abort it.
  get signal() { return this._controller ? this._controller.signal : null; }
  get lost() { return this._lost; }
  // Milliseconds of lease left by this process's clock (0 when not held).
  get remaining() { return this.holds > 0 ? Math.max(0, Math.floor(this._validUntil - now())) : 0; }

  async acquire(options) {
    const opts = checkOptions(`${this.kind}.acquire`, options, ACQUIRE_OPTIONS);
    const wait = checkWait(opts.wait);
    const signal = checkSignal(opts.signal);
    const fl = this._holder.fl;
    fl._checkOpen();
    if (signal && signal.aborted) throw signal.reason;
    while (this._cleanup) await this._cleanup;
    const args = this._acquireArgs();
    const firstHold = this.holds === 0;
    const sentAt = now();
    // The node it was (last) sent to, and whether with ASKING (in a cluster): a give-back
    // of a grant whose reply was lost goes there, the same way.
    const where = {};
    let reply;
    this._inflight++;
    try {
      if (wait === undefined) {
        reply = await fl._send(args, this.key, where);
      } else {
        const r = await fl._sendBlocking(args, wait, signal, this.key, where);
        reply = r.reply;
        if (r.aborted) {
          if (r.unknown) {
            if (firstHold && this.holds === 0 && this._inflight === 1) this._scheduleCleanup(1, where);
          } else if (toInt(reply) !== null) {
            // The grant raced the cancellation: give back exactly that one hold.
            await fl._send(this._releaseArgs(), this.key, { ...where }).catch(() => {});
          }
          throw signal.reason;
        }
      }
    } catch (err) {
      // Without a reply nobody knows whether the server granted it; an unanswered grant
      // would stay held until its ttl, so give it back if it happened.
      // (Only when nothing else of this lease is held or in flight: that release would
      // otherwise give back a hold someone else was granted.)
      const cancelled = signal && signal.aborted && err === signal.reason;
      if (!(err instanceof RedisReplyError) && !cancelled && firstHold && this.holds === 0 &&
          this._inflight === 1) {
        this._scheduleCleanup(1, where);
      }
      throw err;
    } finally {
      this._inflight--;
    }
    const token = toInt(reply);
    if (token === null) return null;
    await this._granted(token, sentAt, wait !== undefined && now() - sentAt > this.ttl / 10);
    return token;
  }

  async _granted(token, sentAt, waitedLong) {
    if (this.holds > 0 && token !== this.token) {
      // A fresh token for an owner that believes it holds: the old hold ended unseen.
      this._lose('expired');
    }
    if (this.holds === 0) {
      this._generation++;
      this._controller = new AbortController();
      this._lost = null;
      this.token = token;
    }
    this.holds++;
    let validUntil = sentAt + this.ttl - drift(this.ttl);
    if (waitedLong) {
      // The lease started at the grant, somewhere in a long wait: ask the server what is
      // left rather than count from the send, which could already read as over.
      const askedAt = now();
      try {
        const hold = this._holdIn(await this._holder.info());
        if (hold && hold.token === token && hold.ttl !== null) {
          validUntil = Math.max(validUntil, askedAt + hold.ttl - drift(this.ttl));
        }
      } catch {
        // keep the conservative estimate
      }
    }
    this._validUntil = validUntil;
    this._holder.attach(this);
    this._holder.armDeadline();
  }

  async release() {
    if (this.holds === 0) return false;
    const fl = this._holder.fl;
    const gen = this._generation;
    const last = this.holds === 1;
    this.holds--;
    if (last) {
      // Stop the watchdog first: an extend landing after the release would answer 0
      // and read as a loss.
      this._generation++;
      this._holder.detach(this);
      this._holder.armDeadline();
    }
    const ok = toInt(await fl._send(this._releaseArgs(), this.key)) === 1;
    if (!ok) {
      if (last) {
        this._lost = new LockLostError(this, 'release-refused');
        this._controller.abort(this._lost);
        this._emitLost(this._lost);
      } else if (this._generation === gen) {
        this._lose('release-refused');
      }
    }
    return ok;
  }

  async extend(ttl) {
    const t = ttl === undefined ? this.ttl : checkTtl('ttl', ttl);
    if (this.holds === 0) return false;
    return this._holder.extend(t);
  }

  async info() {
    return this._holder.info();
  }

  async using(options, fn) {
    if (typeof options === 'function') [options, fn] = [undefined, options];
    if (typeof fn !== 'function') throw new TypeError('using: the last argument must be a function');
    const opts = checkOptions(`${this.kind}.using`, options, ACQUIRE_OPTIONS);
    const token = await this.acquire(opts);
    if (token === null) throw new LockNotAcquiredError(this, opts.wait);
    return runHeld(this, fn);
  }

  async fenceCall(fenceKey, command, ...args) {
    return this._holder.fl.fence(fenceKey).call(this._heldToken(), command, ...args);
  }

  async fenceCheck(fenceKey) {
    return this._holder.fl.fence(fenceKey).check(this._heldToken());
  }

  _heldToken() {
    if (this.holds > 0) return this.token;
    throw this._lost || new FencelockError(`lock "${this.key}" (${this.kind}) is not held`);
  }

  async [asyncDispose]() {
    if (this.holds > 0) await this.release();
  }

  _lose(reason, event) {
    if (this.holds === 0) return;
    const holds = this.holds;
    this.holds = 0;
    this._generation++;
    this._lost = new LockLostError(this, reason, event);
    this._holder.detach(this);
    this._holder.armDeadline();
    // Only our own clock said it was over: the server may still hold it for a moment,
    // and nobody else can have it until it is given back.
    if (reason === 'deadline') this._scheduleCleanup(holds);
    this._controller.abort(this._lost);
    this._emitLost(this._lost);
  }

  // A listener that throws must not break the watchdog or the caller that noticed the
  // loss: its error surfaces as an uncaught exception, as from any event listener.
  _emitLost(err) {
    try {
      this.emit('lost', err);
    } catch (listenerError) {
      process.nextTick(() => { throw listenerError; });
    }
  }

  // Give back up to `times` holds the server may still count for this owner; the next
  // acquire waits for it, so it cannot give back a hold granted after it. `where`: the
  // node (and ASKING) an acquire without a reply went to, in a cluster.
  _scheduleCleanup(times, where) {
    const fl = this._holder.fl;
    if (fl._closed) return;
    const p = (async () => {
      for (let i = 0; i < times; i++) {
        if (toInt(await fl._send(this._releaseArgs(), this.key, where && { ...where })) !== 1) return;
      }
    })().catch(() => {}).finally(() => {
      if (this._cleanup === p) this._cleanup = null;
    });
    this._cleanup = p;
  }
}

async function runHeld(lease, fn) {
  let result;
  try {
    result = await fn(lease.signal, lease);
  } catch (err) {
    // The routine's error is the one to see; the lease ends at its ttl if this fails.
    await lease.release().catch(() => {});
    throw err;
  }
  await lease.release();
  return result;
}

function holderOptions(what, options) {
  const opts = checkOptions(what, options, LOCK_OPTIONS);
  if (opts.onLockLost !== undefined && typeof opts.onLockLost !== 'function') {
    throw new TypeError(`${what}: onLockLost must be a function`);
  }
  return opts;
}

class Lock extends Lease {
  constructor(fl, key, options) {
    const opts = holderOptions('lock', options);
    super(new Holder(fl, checkKey('lock', key), 'lock', opts), 'lock');
    if (opts.onLockLost) this.on('lost', opts.onLockLost);
  }
  _acquireArgs() { return ['LOCK.ACQUIRE', this.key, this.owner, String(this.ttl)]; }
  _releaseArgs() { return ['LOCK.RELEASE', this.key, this.owner]; }
  _holdIn(info) {
    return info && info.owner === this.owner ? { token: info.token, ttl: info.ttl } : null;
  }
}

class RWLockMode extends Lease {
  constructor(holder, mode) {
    super(holder, mode === 'read' ? 'read' : 'write');
    this.mode = mode;
  }
  _acquireArgs() {
    return [this.mode === 'read' ? 'RWLOCK.RLOCK' : 'RWLOCK.WLOCK', this.key, this.owner, String(this.ttl)];
  }
  _releaseArgs() {
    return [this.mode === 'read' ? 'RWLOCK.RUNLOCK' : 'RWLOCK.WUNLOCK', this.key, this.owner];
  }
  _holdIn(info) {
    const h = info && (info.holders || []).find((e) => e.owner === this.owner && e.mode === this.mode);
    return h ? { token: h.token, ttl: h.ttl } : null;
  }
}
class ReadLock extends RWLockMode {}
class WriteLock extends RWLockMode {}

class RWLock {
  constructor(fl, key, options) {
    const opts = holderOptions('rwlock', options);
    const holder = new Holder(fl, checkKey('rwlock', key), 'rwlock', opts);
    this._holder = holder;
    this.read = new ReadLock(holder, 'read');
    this.write = new WriteLock(holder, 'write');
    if (opts.onLockLost) {
      this.read.on('lost', opts.onLockLost);
      this.write.on('lost', opts.onLockLost);
    }
  }
  get key() { return this._holder.key; }
  get owner() { return this._holder.owner; }
  get ttl() { return this._holder.ttl; }
  get renewInterval() { return this._holder.renewInterval; }
  async info() { return this._holder.info(); }
}

class Semaphore extends Lease {
  constructor(fl, key, options) {
    const opts = checkOptions('semaphore', options, [...LOCK_OPTIONS, 'limit', 'permits']);
    const { limit, permits, ...rest } = opts;
    checkInt('limit', limit, 1, MAX_LIMIT, '');
    const p = permits === undefined ? 1 : checkInt('permits', permits, 1, limit, '');
    super(new Holder(fl, checkKey('semaphore', key), 'sem', holderOptions('semaphore', rest)), 'semaphore');
    this.limit = limit;
    this.permits = p;
    if (opts.onLockLost) this.on('lost', opts.onLockLost);
  }
  _acquireArgs() {
    return ['SEM.ACQUIRE', this.key, this.owner, String(this.limit), String(this.ttl), 'COUNT', String(this.permits)];
  }
  _releaseArgs() { return ['SEM.RELEASE', this.key, this.owner]; }
  _holdIn(info) {
    const h = info && (info.holders || []).find((e) => e.owner === this.owner);
    return h ? { token: h.token, ttl: h.ttl } : null;
  }
}

module.exports = {
  Lease, Lock, RWLock, ReadLock, WriteLock, Semaphore, runHeld, asyncDispose,
  LOCK_OPTIONS, ACQUIRE_OPTIONS,
};
