'use strict';

const os = require('node:os');
const { randomUUID } = require('node:crypto');
const { adapterFor } = require('./adapters');
const { FencelockError, RedisReplyError, LockNotAcquiredError, ReplyTimeoutError } = require('./errors');
const { Lock, RWLock, Semaphore, runHeld, asyncDispose, LOCK_OPTIONS, ACQUIRE_OPTIONS } = require('./lease');
const { checkOptions, checkKey, checkInt, checkTtl, tokenArg, stringArg, toInt, timer, now } = require('./util');
const { redirectOf, splitAddress, joinAddress } = require('./cluster');

// How many -MOVED / -ASK one command follows before the error is the caller's (as
// redis-py's RedisClusterRequestTTL).
const MAX_REDIRECTS = 16;

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
    // Connections by node: the key '' for a single server, "host:port" in a cluster.
    this._cmd = new Map();
    this._idle = [];
    this._busy = new Set();
    this._subConns = new Map();
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
    for (const e of this._cmd.values()) if (e.conn) closing.push(e.conn.close());
    this._cmd.clear();
    closing.push(this._subChain.then(() => Promise.allSettled(
      [...this._subConns.values()].map((c) => c.close()))));
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

  // The node that serves `key`: undefined for a single server (or a custom adapter),
  // "host:port" in a cluster.
  async _nodeFor(key) {
    return typeof this._adapter.nodeFor === 'function' ? this._adapter.nodeFor(key) : undefined;
  }

  async _open(purpose, node) {
    this._checkOpen();
    const conn = await (node === undefined ? this._adapter.open(purpose) : this._adapter.open(purpose, node));
    if (this._closed) {
      conn.destroy();
      this._checkOpen();
    }
    return conn;
  }

  _commandConn(node) {
    const k = node === undefined ? '' : node;
    let e = this._cmd.get(k);
    if (!e) {
      e = { conn: null, opening: null };
      this._cmd.set(k, e);
    }
    if (e.conn && !e.conn.closed) return e.conn;
    e.conn = null;
    if (!e.opening) {
      e.opening = this._open('command', node).then((c) => {
        e.opening = null;
        e.conn = c;
        return c;
      }, (err) => {
        e.opening = null;
        throw err;
      });
    }
    return e.opening;
  }

  // One command for `key`, on the shared command connection to the node that serves it,
  // with fencelock's own reply deadline. In a cluster it follows -MOVED and -ASK: the
  // server sends them instead of running the command, so this is never a second run.
  // `where` (optional): start at where.node (with ASKING if where.asking) instead of the
  // key's node; it is updated with where the command was last sent.
  async _send(args, key, where) {
    let node = where && where.node !== undefined ? where.node : await this._nodeFor(key);
    let asking = Boolean(where && where.node !== undefined && where.asking);
    for (let hops = 0; ; hops++) {
      if (where) Object.assign(where, { node, asking });
      try {
        return await this._sendOn(node, args, asking);
      } catch (err) {
        const r = this._redirect(err, node, hops);
        if (!r) {
          // A cluster node that cannot be reached may have failed over: read the slot
          // map again for the next command (the watchdog retries within a second).
          if (node !== undefined && !(err instanceof FencelockError) && typeof this._adapter.refresh === 'function') {
            this._adapter.refresh().catch(() => {});
          }
          throw err;
        }
        ({ node, asking } = r);
      }
    }
  }

  // Where a -MOVED / -ASK reply points, or null when `err` is not one to follow. A
  // -MOVED updates the slot map.
  _redirect(err, node, hops) {
    if (node === undefined || !(err instanceof RedisReplyError) || hops >= MAX_REDIRECTS) return null;
    const r = redirectOf(err);
    if (!r) return null;
    const address = joinAddress(r.host || splitAddress(node).host, r.port);
    if (!r.ask && typeof this._adapter.moved === 'function') this._adapter.moved(r.slot, address);
    return { node: address, asking: r.ask };
  }

  // One command on the command connection to `node`, sent once.
  async _sendOn(node, args, asking = false) {
    this._checkOpen();
    const conn = await this._commandConn(node);
    return new Promise((resolve, reject) => {
      const deadline = setTimeout(() => {
        // A reply that never comes holds up every command behind it: start over on a
        // new connection rather than wait.
        const e = this._cmd.get(node === undefined ? '' : node);
        if (e && e.conn === conn) e.conn = null;
        conn.destroy();
        reject(new ReplyTimeoutError(args[0], this.replyTimeout));
      }, this.replyTimeout);
      deadline.unref();
      // ASKING holds for the next command on the connection: both go out in this tick,
      // so nothing else is sent between them.
      if (asking) conn.send(['ASKING']).catch(() => {});
      conn.send(args).then((v) => { clearTimeout(deadline); resolve(v); },
        (e) => { clearTimeout(deadline); reject(e); });
    });
  }

  async _takeBlocking(node) {
    for (let i = this._idle.length - 1; i >= 0; i--) {
      const c = this._idle[i];
      if (c.closed) {
        this._idle.splice(i, 1);
      } else if (c.node === node) {
        this._idle.splice(i, 1);
        this._busy.add(c);
        return c;
      }
    }
    const c = await this._open('blocking', node);
    c.node = node;
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

  // A blocking acquire (`args` without its WAIT) on a connection of its own, to the node
  // that serves `key`: the server's WAIT holds only that connection. Resolves { reply,
  // aborted, unknown }: `unknown` when the connection was dropped before the reply, so
  // the server may or may not have granted it. `where` is kept up to date with the node
  // it was last sent to (and whether with ASKING), for the give-back of a lost reply.
  //
  // In a cluster a -MOVED (also the answer to a waiter whose slot moved away: it is
  // queued nowhere then) or -ASK sends it on to the node named, keeping the original
  // deadline: the WAIT shrinks by the time already waited, down to one try.
  async _sendBlocking(args, wait, signal, key, where = {}) {
    const start = now();
    let node = await this._nodeFor(key);
    let asking = false;
    for (let hops = 0; ; hops++) {
      let w = wait;
      if (hops > 0 && wait !== Infinity) w = Math.max(0, wait - Math.ceil(now() - start));
      let full = args;
      if (w === Infinity) full = [...args, 'WAIT', '0'];
      else if (w > 0) full = [...args, 'WAIT', String(w)];
      Object.assign(where, { node, asking });
      const r = await this._sendBlockingOn(node, asking, full, w, signal);
      if (!r.redirect) return r;
      const next = this._redirect(r.redirect, node, hops);
      if (!next) throw r.redirect;
      ({ node, asking } = next);
      if (signal && signal.aborted) return { reply: null, aborted: true, unknown: false };
    }
  }

  async _sendBlockingOn(node, asking, args, wait, signal) {
    const conn = await this._takeBlocking(node);
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
          unblocked = toInt(await this._sendOn(node, ['CLIENT', 'UNBLOCK', String(conn.id)]));
        } catch {
          // not allowed (ACL) or no connection: drop the blocked one instead
        }
        // 0: not blocked yet, or the reply is already on its way. Either way only closing
        // the connection settles it.
        if (unblocked !== 1) finish(false, resolve, { reply: null, aborted: true, unknown: true });
      };
      if (asking) conn.send(['ASKING']).catch(() => {});
      conn.send(args).then(
        (reply) => finish(true, resolve, { reply, aborted, unknown: false }),
        (err) => {
          if (err instanceof RedisReplyError) {
            // -MOVED / -ASK: refused without running; the caller sends it on (or, when it
            // was cancelled meanwhile, nothing was granted).
            if (node !== undefined && redirectOf(err)) {
              finish(true, resolve, aborted ? { reply: null, aborted: true, unknown: false } : { redirect: err });
            } else {
              finish(true, reject, err);
            }
          } else {
            finish(false, aborted ? resolve : reject, aborted ? { reply: null, aborted: true, unknown: true } : err);
          }
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

  // Whether to subscribe to keyspace events (asked once, of the node of the first key).
  _events(key) {
    if (!this._eventsOn) {
      if (this.keyspaceEvents !== 'auto') {
        this._eventsOn = Promise.resolve(this.keyspaceEvents);
      } else {
        this._eventsOn = this._send(['CONFIG', 'GET', 'notify-keyspace-events'], key).then((r) => {
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

  // Keyspace events are published by the node that has the key: in a cluster the
  // subscription goes to the node serving `key` now (one subscriber connection per node).
  _subscribe(channel, handler, key) {
    const entry = this._subs.get(channel);
    if (entry) {
      entry.handlers.add(handler);
      return;
    }
    const e = { handlers: new Set([handler]), conn: null };
    this._subs.set(channel, e);
    this._subOp(async () => {
      if (this._subs.get(channel) !== e || this._closed || !(await this._events(key))) return;
      const node = await this._nodeFor(key);
      const k = node === undefined ? '' : node;
      let conn = this._subConns.get(k);
      if (!conn || conn.closed) {
        conn = await this._open('subscriber', node);
        this._subConns.set(k, conn);
      }
      e.conn = conn;
      await conn.subscribe(channel, (message) => {
        const current = this._subs.get(channel);
        if (current) for (const h of current.handlers) h(message);
      });
    });
  }

  _unsubscribe(channel, handler) {
    const e = this._subs.get(channel);
    if (!e || !e.handlers.delete(handler) || e.handlers.size > 0) return;
    this._subs.delete(channel);
    this._subOp(async () => {
      if (this._subs.has(channel) || !e.conn || e.conn.closed) return;
      await e.conn.unsubscribe(channel);
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

  async next() { return toInt(await this._fl._send(['FENCE.NEXT', this.key], this.key)); }

  async current() { return toInt(await this._fl._send(['FENCE.CURRENT', this.key], this.key)); }

  // true, or StaleTokenError when a newer token has been recorded.
  async check(token) {
    return toInt(await this._fl._send(['FENCE.CHECK', this.key, tokenArg(token)], this.key)) === 1;
  }

  // The inner command's own reply, or StaleTokenError and nothing ran. Sent on
  // fencelock's connection, which never re-sends: a fenced LPUSH runs at most once.
  async call(token, command, ...args) {
    return this._fl._send(fenceCallArgs(this.key, token, command, ...args), this.key);
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
