'use strict';

const { it } = require('node:test');
const assert = require('node:assert/strict');
const { forEachClient, info, uniqueKey, waitFor } = require('../support/harness');
const { Lock, LockNotAcquiredError, LockLostError } = require('..');

const asyncDispose = Symbol.asyncDispose || Symbol.for('nodejs.asyncDispose');

// `await using` is syntax from Node 24 on; older runtimes cannot even parse it, so the
// test builds the function at run time and, where that fails, runs the very steps the
// syntax stands for (call [Symbol.asyncDispose] when the block ends, also on a throw).
function awaitUsingBlock() {
  const AsyncFunction = (async () => {}).constructor;
  try {
    return {
      native: true,
      run: new AsyncFunction('fl', 'key', 'body', 'await using lock = await fl.acquire(key); return await body(lock);'),
    };
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    return {
      native: false,
      async run(fl, key, body) {
        const lock = await fl.acquire(key);
        try {
          return await body(lock);
        } finally {
          await lock[asyncDispose]();
        }
      },
    };
  }
}

forEachClient('using and await using', (t) => {
  it('using(key, opts, fn) holds the lock for fn, hands it the signal, returns its value, releases', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('u');
    const result = await fl.using(key, { ttl: 5000 }, async (signal, lock) => {
      assert.ok(signal instanceof AbortSignal);
      assert.equal(signal.aborted, false);
      assert.ok(lock instanceof Lock);
      assert.equal(lock.signal, signal);
      const server = await info(t.admin, 'LOCK.INFO', key);
      assert.equal(server.owner, lock.owner);
      assert.equal(server.token, lock.token);
      return 'done';
    });
    assert.equal(result, 'done');
    assert.equal(await info(t.admin, 'LOCK.INFO', key), null);
  });

  it('releases when the routine throws, and the routine\'s error is the one thrown', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('u');
    const boom = new Error('boom');
    await assert.rejects(fl.using(key, async () => { throw boom; }), (err) => err === boom);
    assert.equal(await info(t.admin, 'LOCK.INFO', key), null);
  });

  it('throws LockNotAcquiredError when busy, after the wait', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('u');
    await fl.lock(key).acquire();
    let ran = false;
    await assert.rejects(fl.using(key, async () => { ran = true; }), LockNotAcquiredError);
    const started = Date.now();
    await assert.rejects(fl.using(key, { wait: 100 }, async () => { ran = true; }), (err) => {
      assert.ok(err instanceof LockNotAcquiredError);
      assert.match(err.message, /not acquired within 100 ms/);
      return true;
    });
    assert.ok(Date.now() - started >= 90);
    assert.equal(ran, false);
    await assert.rejects(fl.acquire(key), LockNotAcquiredError);
  });

  it('the routine sees its signal abort when the lease is lost mid-way', async () => {
    const fl = await t.fencelock({ keyspaceEvents: false });
    const key = uniqueKey('u');
    const reason = await fl.using(key, { ttl: 100, watchdog: false }, (signal) =>
      new Promise((resolve) => signal.addEventListener('abort', () => resolve(signal.reason))));
    assert.ok(reason instanceof LockLostError);
    assert.equal(reason.reason, 'deadline');
  });

  it('await using: the lock is released when the block ends, also when it throws', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('u');
    const block = awaitUsingBlock();
    const token = await block.run(fl, key, async (lock) => {
      assert.equal(typeof lock[asyncDispose], 'function');
      assert.equal((await info(t.admin, 'LOCK.INFO', key)).owner, lock.owner);
      return lock.token;
    });
    assert.ok(token > 0);
    assert.equal(await info(t.admin, 'LOCK.INFO', key), null, `released (native syntax: ${block.native})`);
    await assert.rejects(block.run(fl, key, async () => { throw new Error('inside'); }), /inside/);
    assert.equal(await info(t.admin, 'LOCK.INFO', key), null);
  });

  it('disposing a lock that was lost or released does nothing and does not throw', async () => {
    const fl = await t.fencelock({ keyspaceEvents: false });
    const key = uniqueKey('u');
    const lock = await fl.acquire(key, { ttl: 100, watchdog: false });
    await waitFor('lost', () => lock.signal.aborted, { timeout: 2000 });
    await lock[asyncDispose]();
    const other = await fl.acquire(key);
    await other.release();
    await other[asyncDispose]();
    assert.equal(await info(t.admin, 'LOCK.INFO', key), null);
  });

  it('a Fencelock is async-disposable too: it closes', async () => {
    const fl = await t.fencelock();
    await fl[asyncDispose]();
    await assert.rejects(fl.lock(uniqueKey('u')).acquire(), /closed/);
  });
});
