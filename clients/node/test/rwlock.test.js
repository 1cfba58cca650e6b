'use strict';

const { it } = require('node:test');
const assert = require('node:assert/strict');
const { forEachClient, info, uniqueKey, waitFor, calls, subscribers } = require('../support/harness');
const { ReadLock, WriteLock } = require('..');

forEachClient('read-write lock', (t) => {
  it('readers share, a writer waits for them and gets a larger token', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('rw');
    const r1 = fl.rwlock(key);
    const r2 = fl.rwlock(key);
    const w = fl.rwlock(key);
    assert.ok(r1.read instanceof ReadLock);
    assert.ok(w.write instanceof WriteLock);
    const t1 = await r1.read.acquire();
    const t2 = await r2.read.acquire();
    assert.ok(t1 > 0 && t2 > t1, 'each reader has its own token');
    assert.equal(await w.write.acquire(), null);
    const pending = w.write.acquire({ wait: 5000 });
    await waitFor('the writer waits', async () => (await info(t.admin, 'RWLOCK.INFO', key)).waiters === 1);
    // Writer preference: a reader arriving after a waiting writer is refused.
    assert.equal(await fl.rwlock(key).read.acquire(), null);
    await r1.read.release();
    await r2.read.release();
    const tw = await pending;
    assert.ok(tw > t2);
    const server = await info(t.admin, 'RWLOCK.INFO', key);
    assert.equal(server.mode, 'write');
    assert.deepEqual(server.holders.map((h) => [h.owner, h.mode]), [[w.owner, 'write']]);
    await w.write.release();
    assert.equal(await info(t.admin, 'RWLOCK.INFO', key), null);
  });

  it('downgrade: the writer takes the read lock too; one watchdog keeps both', async () => {
    const fl = await t.fencelock({ keyspaceEvents: false });
    const key = uniqueKey('rw');
    const rw = fl.rwlock(key, { ttl: 300, renewInterval: 100 });
    const tw = await rw.write.acquire();
    const tr = await rw.read.acquire();
    assert.ok(tr > tw, 'the read hold is a fresh grant');
    const start = await calls(t.admin, 'rwlock.extend');
    await waitFor('renewals past two leases', async () => (await calls(t.admin, 'rwlock.extend')) >= start + 6);
    const modes = (await info(t.admin, 'RWLOCK.INFO', key)).holders.map((h) => h.mode).sort();
    assert.deepEqual(modes, ['read', 'write']);
    assert.equal(await rw.write.release(), true);
    assert.equal((await rw.info()).mode, 'read', 'keeps reading after WUNLOCK');
    assert.equal(rw.read.held, true);
    assert.equal(rw.read.signal.aborted, false);
    await rw.read.release();
    assert.equal(await info(t.admin, 'RWLOCK.INFO', key), null);
  });

  it('a lost lease aborts the signal of every mode the owner held', async () => {
    const fl = await t.fencelock({ watchdog: false });
    const key = uniqueKey('rw');
    const lost = [];
    const rw = fl.rwlock(key, { ttl: 60000, onLockLost: (err) => lost.push(err.kind) });
    await rw.write.acquire();
    await rw.read.acquire();
    await waitFor('subscribed', async () => (await subscribers(t.admin, `__keyspace@0__:${key}`)) === 1);
    assert.equal(await t.admin.call('RWLOCK.EXTEND', key, rw.owner, '50'), 1);
    await waitFor('both signals abort', () => rw.read.signal.aborted && rw.write.signal.aborted, { timeout: 3000 });
    assert.deepEqual(lost.sort(), ['read', 'write']);
    assert.equal(rw.read.signal.reason.event, 'rwlock.expired');
  });

  it('using() on a mode', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('rw');
    const rw = fl.rwlock(key);
    const seen = await rw.read.using(async (signal, lease) => {
      assert.equal(lease, rw.read);
      assert.equal(signal.aborted, false);
      return (await info(t.admin, 'RWLOCK.INFO', key)).mode;
    });
    assert.equal(seen, 'read');
    assert.equal(await info(t.admin, 'RWLOCK.INFO', key), null);
  });
});
