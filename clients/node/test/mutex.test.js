'use strict';

const { it } = require('node:test');
const assert = require('node:assert/strict');
const { forEachClient, info, uniqueKey, waitFor, fencelockStat } = require('../support/harness');
const { Lock, RedisReplyError, FencelockError } = require('..');

forEachClient('mutex', (t) => {
  it('grants a positive token, refuses another owner, frees the key on release', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('m');
    const a = fl.lock(key);
    const b = fl.lock(key);
    assert.ok(a instanceof Lock);
    assert.notEqual(a.owner, b.owner);
    const token = await a.acquire();
    assert.ok(Number.isSafeInteger(token) && token > 0, `token ${token}`);
    assert.equal(a.token, token);
    assert.equal(a.held, true);
    assert.equal(await b.acquire(), null);
    assert.equal(b.held, false);
    const server = await info(t.admin, 'LOCK.INFO', key);
    assert.equal(server.owner, a.owner);
    assert.equal(server.token, token);
    const mine = await a.info();
    assert.deepEqual([mine.owner, mine.token, mine.holds, mine.waiters], [a.owner, token, 1, 0]);
    assert.equal(await a.release(), true);
    assert.equal(a.held, false);
    assert.equal(await t.admin.exists(key), 0);
    assert.equal(await a.release(), false, 'a second release has nothing to give back');
  });

  it('is reentrant: same token, one hold per acquire', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('m');
    const a = fl.lock(key);
    const t1 = await a.acquire();
    const t2 = await a.acquire();
    assert.equal(t2, t1);
    assert.equal(a.holds, 2);
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).holds, 2);
    assert.equal(await a.release(), true);
    assert.equal(a.held, true);
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).owner, a.owner);
    assert.equal(await a.release(), true);
    assert.equal(await info(t.admin, 'LOCK.INFO', key), null);
  });

  it('waits server-side and is granted, with a larger token, when the holder releases', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('m');
    const a = fl.lock(key);
    const b = fl.lock(key);
    const ta = await a.acquire();
    const pending = b.acquire({ wait: 10000 });
    await waitFor('b waits on the key', async () => (await info(t.admin, 'LOCK.INFO', key)).waiters === 1);
    // The holder's release goes through while the waiter blocks its own connection.
    assert.equal(await a.release(), true);
    const tb = await pending;
    assert.ok(tb > ta, `${tb} > ${ta}`);
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).owner, b.owner);
    await b.release();
  });

  it('wait: Infinity waits without limit (WAIT 0)', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('m');
    const a = fl.lock(key);
    const b = fl.lock(key);
    await a.acquire();
    const pending = b.acquire({ wait: Infinity });
    await waitFor('b waits', async () => (await info(t.admin, 'LOCK.INFO', key)).waiters === 1);
    await a.release();
    assert.ok(await pending > 0);
    await b.release();
  });

  it('answers null when the wait runs out, and leaves no waiter behind', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('m');
    const a = fl.lock(key);
    await a.acquire();
    const before = await fencelockStat(t.admin, 'wait_timeouts');
    const started = Date.now();
    assert.equal(await fl.lock(key).acquire({ wait: 150 }), null);
    assert.ok(Date.now() - started >= 140, 'the server waited');
    assert.equal(await fencelockStat(t.admin, 'wait_timeouts'), before + 1);
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).waiters, 0);
    await a.release();
  });

  it('wait: 0 tries once, like no wait', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('m');
    await fl.lock(key).acquire();
    const before = await fencelockStat(t.admin, 'wait_timeouts');
    assert.equal(await fl.lock(key).acquire({ wait: 0 }), null);
    assert.equal(await fencelockStat(t.admin, 'wait_timeouts'), before, 'no WAIT was sent');
  });

  it('extend() resets the lease and reports a lock it does not hold', async () => {
    const fl = await t.fencelock({ watchdog: false });
    const key = uniqueKey('m');
    const a = fl.lock(key, { ttl: 5000 });
    assert.equal(await a.extend(), false, 'not held');
    await a.acquire();
    assert.equal(await a.extend(60000), true);
    const { ttl } = await info(t.admin, 'LOCK.INFO', key);
    assert.ok(ttl > 50000 && ttl <= 60000, `ttl ${ttl}`);
    assert.ok(a.remaining > 50000, `remaining ${a.remaining}`);
    await a.release();
  });

  it('turns a server error into RedisReplyError with the server\'s message', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('m');
    await t.admin.set(key, 'a string');
    await assert.rejects(fl.lock(key).acquire(), (err) => {
      assert.ok(err instanceof RedisReplyError, err.name);
      assert.match(err.message, /^WRONGTYPE/);
      assert.ok(err.cause, 'keeps the client\'s own error');
      return true;
    });
    await assert.rejects(fl.lock(key).acquire({ wait: 1000 }), /WRONGTYPE/);
  });

  it('refuses bad input before sending anything', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('m');
    assert.throws(() => fl.lock(''), { name: 'TypeError', message: /key must be a non-empty string/ });
    assert.throws(() => fl.lock(42), /key must be a non-empty string/);
    assert.throws(() => fl.lock(key, { ttl: 0 }), { name: 'RangeError', message: /ttl must be an integer from 1 to 1099511627776/ });
    assert.throws(() => fl.lock(key, { ttl: 2 ** 40 + 1 }), /ttl must be an integer/);
    assert.throws(() => fl.lock(key, { ttl: 1.5 }), /ttl must be an integer/);
    assert.throws(() => fl.lock(key, { tll: 1000 }), /unknown option "tll"/);
    assert.throws(() => fl.lock(key, { owner: '' }), /owner must be a non-empty string/);
    assert.throws(() => fl.lock(key, { ttl: 1000, renewInterval: 1000 }), /renewInterval must be an integer from 1 to 999/);
    assert.throws(() => fl.lock(key, { onLockLost: 'x' }), /onLockLost must be a function/);
    const lock = fl.lock(key);
    await assert.rejects(lock.acquire({ wait: -1 }), /wait must be a non-negative integer of milliseconds or Infinity/);
    await assert.rejects(lock.acquire({ wait: '100' }), /wait must be/);
    await assert.rejects(lock.acquire({ wiat: 100 }), /unknown option "wiat"/);
    await assert.rejects(lock.acquire({ signal: {} }), /signal must be an AbortSignal/);
    await assert.rejects(lock.extend(0), /ttl must be an integer/);
    assert.equal(await t.admin.call('LOCK.INFO', key), null, 'nothing was acquired');
  });

  it('after close(), refuses to work and says why', async () => {
    const fl = await t.fencelock();
    const lock = fl.lock(uniqueKey('m'));
    await fl.close();
    await assert.rejects(lock.acquire(), (err) => err instanceof FencelockError && /closed/.test(err.message));
  });
});
