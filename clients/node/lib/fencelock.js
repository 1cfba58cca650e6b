'use strict';

const os = require('node:os');
const { randomUUID } = require('node:crypto');
const { adapterFor } = require('./adapters');
const { FencelockError, RedisReplyError, LockNotAcquiredError, ReplyTimeoutError } = require('./errors');
const { Lock, RWLock, Semaphore, runHeld, asyncDispose, LOCK_OPTIONS, ACQUIRE_OPTIONS } = require('./lease');
const { checkOptions, checkKey, checkInt, checkTtl, tokenArg, stringArg, toInt, timer } = require('./util');

const OPTIONS = ['ttl', 'renewInterval', 'watchdog', 'replyTimeout', 'keyspaceEvents', 'maxIdleConnections'];

class Fencelock {
  constructor(client, options) {
    const opts = checkOptions('Fencelock', options, OPTIONS);
    this._adapter = adapterFor(client);
    this.ttl = opts.ttl === undefined ? 30000 : checkTtl('ttl', opts.ttl);
    this.watchdog = opts.watchdog === undefined ? true : Boolean(opts.watchdog);
    if (opts.renewInterval !== undefined) {
      // Checked here so a bad default fails at construction, not at the first lock.
      checkInt('renewInterval', opts.renewInterval, 1, this.ttl - 1);
    }
    this._renewInterval = opts.renewInterval;
    this.replyTimeout = opts.replyTimeout === undefined ? 10000
      : checkInt('replyTimeout', opts.replyTimeout, 1, 2 ** 31 - 1);
    const ev = opts.keyspaceEvents === undefined ? 'auto' : opts.keyspaceEvents;
    if (ev !== 'auto' && ev !== true && ev !== false) {
      throw new TypeError('keyspaceEvents must be true, false or "auto"');
    }
    this.keyspaceEvents = ev;
    this.maxIdleConnections = opts.maxIdleConnections === undefined ? 2
      : checkInt('maxIdleConnections', opts.maxIdleConnections, 0, 1000, '');
    this._closed = false;
    this._cmdConn = null;
    this._cmdOpening = null;
    this._idle = [];
    this._busy = new Set();
    this._subConn = null;
    this._subs = new Map();
    this._subChain = Promise.resolve();
    this._eventsOn = null;
    this._active = new Set();
    this._ownerPrefix = `${os.hostname()}:${process.pid}:`;
  }

  get clientKind() { return this._adapter.kind; }

  lock(key, options) {
    return new Lock(this, key, this._lockDefaults(options));
  }

  rwlock(key, options) {
    return new RWLock(this, key, this._lockDefaults(options));
  }

  semaphore(key, options) {
    return new Semaphore(this, key, this._lockDefaults(options));
  }

  fence(key) {
    return new Fence(this, key);
  }

  // A held Lock, or LockNotAcquiredError: the shape `await using` wants.
  async acquire(key, options) {
    const [lockOpts, acquireOpts] = split('acquire', options);
    const lock = this.lock(key, lockOpts);
    if (await lock.acquire(acquireOpts) === null) throw new LockNotAcquiredError(lock, acquireOpts.wait);
    return lock;
  }

  async using(key, options, fn) {
    if (typeof options === 'function') [options, fn] = [undefined, options];
    if (typeof fn !== 'function') throw new TypeError('using: the last argument must be a function');
    const [lockOpts, acquireOpts] = split('using', options);
    const lock = this.lock(key, lockOpts);
    if (await lock.acquire(acquireOpts) === null) throw new LockNotAcquiredError(lock, acquireOpts.wait);
    return runHeld(lock, fn);
  }

  // Stops every watchdog (held leases are reported lost with reason 'closed' and end at
  // their ttl on the server) and closes fencelock's own connections. The application's
  // client is not touched.
  async close() {
    if (this._closed) return;
    this._closed = true;
    for (const h of [...this._active]) for (const l of [...h.leases]) l._lose('closed');
    const closing = [];
    for (const c of this._busy) c.destroy();
    for (const c of this._idle.splice(0)) closing.push(c.close());
    if (this._cmdConn) closing.push(this._cmdConn.close());
    this._cmdConn = null;
    closing.push(this._subChain.then(() => this._subConn && this._subConn.close()));
    await Promise.allSettled(closing);
  }

  async [asyncDispose]() {
    await this.close();
  }

  _lockDefaults(options) {
    if (this._renewInterval === undefined) return options;
    if (options === undefined || options === null) options = {};
    if (typeof options !== 'object' || options.renewInterval !== undefined) return options;
    // The instance's renewInterval only fits the instance's ttl.
    if (options.ttl !== undefined && options.ttl !== this.ttl) return options;
    return { ...options, renewInterval: this._renewInterval };
  }

  _newOwner() {
    return this._ownerPrefix + randomUUID();
  }

  _checkOpen() {
    if (this._closed) throw new FencelockError('this Fencelock instance is closed');
  }

  async _open(purpose) {
    this._checkOpen();
    const conn = await this._adapter.open(purpose);
    if (this._closed) {
      conn.destroy();
      this._checkOpen();
    }
    return conn;
  }

  _commandConn() {
    if (this._cmdConn && !this._cmdConn.closed) return this._cmdConn;
    this._cmdConn = null;
    if (!this._cmdOpening) {
      this._cmdOpening = this._open('command').then((c) => {
        this._cmdOpening = null;
        this._cmdConn = c;
        return c;
      }, (err) => {
        this._cmdOpening = null;
        throw err;
      });
    }
    return this._cmdOpening;
  }

  // One command on the shared command connection, with fencelock's own reply deadline.
  async _send(args) {
    this._checkOpen();
    const conn = await this._commandConn();
    return new Promise((resolve, reject) => {
      const deadline = setTimeout(() => {
        // A reply that never comes holds up every command behind it: start over on a
        // new connection rather than wait.
        if (this._cmdConn === conn) this._cmdConn = null;
        conn.destroy();
        reject(new ReplyTimeoutError(args[0], this.replyTimeout));
      }, this.replyTimeout);
      deadline.unref();
      conn.send(args).then((v) => { clearTimeout(deadline); resolve(v); },
        (e) => { clearTimeout(deadline); reject(e); });
    });
  }

  async _takeBlocking() {
    while (this._idle.length) {
      const c = this._idle.pop();
      if (!c.closed) {
        this._busy.add(c);
        return c;
      }
    }
    const c = await this._open('blocking');
    try {
      c.id = toInt(await c.send(['CLIENT', 'ID']));
    } catch (err) {
      c.destroy();
      throw err;
    }
    if (this._closed) {
      c.destroy();
      this._checkOpen();
    }
    this._busy.add(c);
    return c;
  }

  _giveBlocking(c, reuse) {
    this._busy.delete(c);
    if (reuse && !c.closed && !this._closed && this._idle.length < this.maxIdleConnections) {
      this._idle.push(c);
    } else if (reuse && !c.closed) {
      c.close();
    } else {
      c.destroy();
    }
  }

  // A blocking acquire on a connection of its own: the server's WAIT holds only that
  // connection. Resolves { reply, aborted, unknown }: `unknown` when the connection was
  // dropped before the reply, so the server may or may not have granted it.
  async _sendBlocking(args, wait, signal) {
    const conn = await this._takeBlocking();
    const limit = wait === Infinity ? null : wait + this.replyTimeout;
    return new Promise((resolve, reject) => {
      let done = false;
      let aborted = false;
      let deadline = null;
      const finish = (reuse, fn, value) => {
        if (done) return;
        done = true;
        if (deadline) deadline.clear();
        if (signal) signal.removeEventListener('abort', onAbort);
        this._giveBlocking(conn, reuse);
        fn(value);
      };
      const onAbort = async () => {
        aborted = true;
        let unblocked = 0;
        try {
          // The server answers the blocked acquire with nil: the connection stays usable.
          unblocked = toInt(await this._send(['CLIENT', 'UNBLOCK', String(conn.id)]));
        } catch {
          // not allowed (ACL) or no connection: drop the blocked one instead
        }
        // 0: not blocked yet, or the reply is already on its way. Either way only closing
        // the connection settles it.
        if (unblocked !== 1) finish(false, resolve, { reply: null, aborted: true, unknown: true });
      };
      conn.send(args).then(
        (reply) => finish(true, resolve, { reply, aborted, unknown: false }),
        (err) => {
          if (err instanceof RedisReplyError) finish(true, reject, err);
          else finish(false, aborted ? resolve : reject, aborted ? { reply: null, aborted: true, unknown: true } : err);
        });
      if (limit !== null) {
        deadline = timer(limit, () => finish(false, reject, new ReplyTimeoutError(args[0], limit)));
      }
      if (signal) {
        signal.addEventListener('abort', onAbort, { once: true });
        // It may have been aborted while a connection was being opened.
        if (signal.aborted) onAbort();
      }
    });
  }

  _channel(key) {
    return `__keyspace@${this._adapter.db}__:${key}`;
  }

  _events() {
    if (!this._eventsOn) {
      if (this.keyspaceEvents !== 'auto') {
        this._eventsOn = Promise.resolve(this.keyspaceEvents);
      } else {
        this._eventsOn = this._send(['CONFIG', 'GET', 'notify-keyspace-events']).then((r) => {
          let flags = '';
          if (Array.isArray(r)) flags = String(r[1] ?? '');
          else if (r instanceof Map) flags = String([...r.values()][0] ?? '');
          else if (r && typeof r === 'object') flags = String(Object.values(r)[0] ?? '');
          return flags.includes('K') && (flags.includes('A') || flags.includes('d'));
        }, () => true); // CONFIG may be denied: subscribing costs little if events are off
      }
    }
    return this._eventsOn;
  }

  _subOp(fn) {
    this._subChain = this._subChain.then(fn).catch(() => {});
  }

  _subscribe(channel, handler) {
    const set = this._subs.get(channel);
    if (set) {
      set.add(handler);
      return;
    }
    this._subs.set(channel, new Set([handler]));
    this._subOp(async () => {
      if (!this._subs.has(channel) || this._closed || !(await this._events())) return;
      if (!this._subConn || this._subConn.closed) this._subConn = await this._open('subscriber');
      await this._subConn.subscribe(channel, (message) => {
        const handlers = this._subs.get(channel);
        if (handlers) for (const h of handlers) h(message);
      });
    });
  }

  _unsubscribe(channel, handler) {
    const set = this._subs.get(channel);
    if (!set || !set.delete(handler) || set.size > 0) return;
    this._subs.delete(channel);
    this._subOp(async () => {
      if (this._subs.has(channel) || !this._subConn || this._subConn.closed) return;
      await this._subConn.unsubscribe(channel);
    });
  }
}

function split(what, options) {
  const opts = checkOptions(what, options, [...LOCK_OPTIONS, ...ACQUIRE_OPTIONS]);
  const lockOpts = {};
  const acquireOpts = {};
  for (const [k, v] of Object.entries(opts)) {
    (ACQUIRE_OPTIONS.includes(k) ? acquireOpts : lockOpts)[k] = v;
  }
  return [lockOpts, acquireOpts];
}

// The resource side of fencing: FENCE.* on one fence key.
class Fence {
  constructor(fl, key) {
    this._fl = fl;
    this.key = checkKey('fence', key);
  }

  async next() { return toInt(await this._fl._send(['FENCE.NEXT', this.key])); }

  async current() { return toInt(await this._fl._send(['FENCE.CURRENT', this.key])); }

  // true, or StaleTokenError when a newer token has been recorded.
  async check(token) {
    return toInt(await this._fl._send(['FENCE.CHECK', this.key, tokenArg(token)])) === 1;
  }

  // The inner command's own reply, or StaleTokenError and nothing ran. Sent on
  // fencelock's connection, which never re-sends: a fenced LPUSH runs at most once.
  async call(token, command, ...args) {
    return this._fl._send(fenceCallArgs(this.key, token, command, ...args));
  }
}

// FENCE.CALL's arguments, for sending it yourself inside MULTI or a pipeline.
function fenceCallArgs(fenceKey, token, command, ...args) {
  checkKey('FENCE.CALL', fenceKey);
  if (typeof command !== 'string' || command.length === 0) {
    throw new TypeError('FENCE.CALL: command must be a non-empty string');
  }
  return ['FENCE.CALL', fenceKey, tokenArg(token), command, ...args.map(stringArg)];
}

module.exports = { Fencelock, Fence, fenceCallArgs };
