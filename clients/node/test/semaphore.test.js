'use strict';

const { it } = require('node:test');
const assert = require('node:assert/strict');
const { forEachClient, info, uniqueKey, waitFor, calls } = require('../support/harness');
const { Semaphore, RedisReplyError } = require('..');

forEachClient('semaphore', (t) => {
  it('grants up to the limit, then waits server-side for a permit', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('s');
    const a = fl.semaphore(key, { limit: 2 });
    const b = fl.semaphore(key, { limit: 2 });
    const c = fl.semaphore(key, { limit: 2 });
    assert.ok(a instanceof Semaphore);
    const ta = await a.acquire();
    const tb = await b.acquire();
    assert.ok(ta > 0 && tb > ta);
    assert.equal(await c.acquire(), null);
    const pending = c.acquire({ wait: 5000 });
    await waitFor('c waits', async () => (await info(t.admin, 'SEM.INFO', key)).waiters === 1);
    await a.release();
    assert.ok(await pending > tb);
    const server = await info(t.admin, 'SEM.INFO', key);
    assert.equal(server.available, 0);
    assert.deepEqual(server.holders.map((h) => h.owner).sort(), [b.owner, c.owner].sort());
    await b.release();
    await c.release();
    assert.equal(await info(t.admin, 'SEM.INFO', key), null);
  });

  it('takes several permits at once', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('s');
    const big = fl.semaphore(key, { limit: 3, permits: 2 });
    await big.acquire();
    const server = await big.info();
    assert.equal(server.available, 1);
    assert.equal(server.holders[0].permits, 2);
    assert.equal(await fl.semaphore(key, { limit: 3, permits: 2 }).acquire(), null);
    assert.ok(await fl.semaphore(key, { limit: 3 }).acquire() > 0);
    await big.release();
  });

  it('checks limit and permits, and passes the server\'s limit mismatch through', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('s');
    assert.throws(() => fl.semaphore(key), { name: 'RangeError', message: /limit must be an integer from 1 to 2147483648/ });
    assert.throws(() => fl.semaphore(key, { limit: 2, permits: 3 }), /permits must be an integer from 1 to 2/);
    assert.throws(() => fl.semaphore(key, { limit: 0 }), /limit must be/);
    await fl.semaphore(key, { limit: 2 }).acquire();
    await assert.rejects(fl.semaphore(key, { limit: 5 }).acquire(), (err) => {
      assert.ok(err instanceof RedisReplyError);
      assert.equal(err.message, 'ERR limit mismatch: semaphore has limit 2');
      return true;
    });
  });

  it('the watchdog keeps the permits; a deleted semaphore is reported lost', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('s');
    const s = fl.semaphore(key, { limit: 2, ttl: 300, renewInterval: 100 });
    await s.acquire();
    const start = await calls(t.admin, 'sem.extend');
    await waitFor('renewals past two leases', async () => (await calls(t.admin, 'sem.extend')) >= start + 6);
    assert.equal((await info(t.admin, 'SEM.INFO', key)).holders[0].owner, s.owner);
    assert.equal(s.signal.aborted, false);
    await t.admin.del(key);
    await waitFor('the signal aborts', () => s.signal.aborted, { timeout: 3000 });
    // Told by the key's `del` event, or by the next renewal, whichever comes first.
    assert.ok(['event', 'extend-refused'].includes(s.signal.reason.reason), s.signal.reason.reason);
  });
});
