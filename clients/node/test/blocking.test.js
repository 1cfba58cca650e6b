'use strict';

// A blocking acquire is sent once, on a connection of its own, and is never given up
// while the server may still grant it: whatever timeouts the application's client has.

const { it } = require('node:test');
const assert = require('node:assert/strict');
const { forEachClient, info, uniqueKey, waitFor, calls, fencelockStat } = require('../support/harness');
const { ReplyTimeoutError, RedisReplyError } = require('..');

// The timeouts a user sets on the client for ordinary commands; a blocked acquire
// lasting far longer must neither be re-sent nor abandoned because of them.
const SHORT_TIMEOUTS = {
  ioredis: { commandTimeout: 100, socketTimeout: 100, maxRetriesPerRequest: 7 },
  'redis@5': { socket: { socketTimeout: 100 }, commandOptions: { timeout: 100 } },
  'redis@4': { pingInterval: 50 },
};

async function blockedOn(admin, key, n = 1) {
  return waitFor(`${n} waiter(s) on ${key}`, async () => {
    const i = await info(admin, 'LOCK.INFO', key);
    return i && i.waiters === n;
  });
}

forEachClient('blocking acquire', (t) => {
  it('outlives the client\'s own timeouts and is sent exactly once', async () => {
    const fl = await t.fencelock({}, SHORT_TIMEOUTS[t.kind.name]);
    const key = uniqueKey('b');
    const holder = fl.lock(key);
    await holder.acquire();
    const before = await calls(t.admin, 'lock.acquire');
    const waiter = fl.lock(key);
    const pending = waiter.acquire({ wait: 5000 });
    await blockedOn(t.admin, key);
    // Ten times the client's timeouts pass while it stays blocked.
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).waiters, 1, 'still waiting');
    await holder.release();
    const token = await pending;
    assert.ok(token > holder.token);
    assert.equal(await calls(t.admin, 'lock.acquire'), before + 1, 'one LOCK.ACQUIRE for the waiter');
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).owner, waiter.owner);
    await waiter.release();
  });

  it('an AbortSignal cancels the wait: CLIENT UNBLOCK, no waiter left, no grant later', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('b');
    const holder = fl.lock(key);
    await holder.acquire();
    const ac = new AbortController();
    const waiter = fl.lock(key);
    const pending = waiter.acquire({ wait: 30000, signal: ac.signal });
    await blockedOn(t.admin, key);
    const reason = new Error('shutting down');
    ac.abort(reason);
    await assert.rejects(pending, (err) => err === reason);
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).waiters, 0);
    await holder.release();
    assert.equal(await info(t.admin, 'LOCK.INFO', key), null, 'nobody was granted the lock');
    assert.equal(waiter.held, false);
    // The cancelled connection went back to the pool and serves the next wait.
    const clientsBefore = (await t.admin.call('CLIENT', 'LIST')).split('\n').length;
    assert.ok(await waiter.acquire({ wait: 1000 }) > 0);
    assert.equal((await t.admin.call('CLIENT', 'LIST')).split('\n').length, clientsBefore);
    await waiter.release();
  });

  it('a wait longer than a timer can count (2^32 ms) is not cut short', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('b');
    const holder = fl.lock(key);
    await holder.acquire();
    const waiter = fl.lock(key);
    const pending = waiter.acquire({ wait: 2 ** 32 });
    await blockedOn(t.admin, key);
    await holder.release();
    assert.ok(await pending > holder.token);
    await waiter.release();
  });

  it('an already aborted signal sends nothing', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('b');
    const before = await calls(t.admin, 'lock.acquire');
    await assert.rejects(fl.lock(key).acquire({ wait: 1000, signal: AbortSignal.abort() }), { name: 'AbortError' });
    assert.equal(await calls(t.admin, 'lock.acquire'), before);
  });

  it('a dropped connection fails the acquire without re-sending it or leaving a waiter', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('b');
    const holder = fl.lock(key);
    await holder.acquire();
    const before = await calls(t.admin, 'lock.acquire');
    const waiter = fl.lock(key);
    const pending = waiter.acquire({ wait: 30000 });
    await blockedOn(t.admin, key);
    const blocked = (await t.admin.call('CLIENT', 'LIST')).split('\n')
      .filter((l) => / cmd=lock\.acquire /.test(l) && / flags=b /.test(l));
    assert.equal(blocked.length, 1);
    const id = / id=(\d+) /.exec(` ${blocked[0]}`)[1];
    const failed = assert.rejects(pending, (err) => !(err instanceof RedisReplyError));
    await t.admin.call('CLIENT', 'KILL', 'ID', id);
    await failed;
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).waiters, 0);
    await holder.release();
    assert.equal(await info(t.admin, 'LOCK.INFO', key), null, 'no grant to the dropped waiter');
    assert.equal(await calls(t.admin, 'lock.acquire'), before + 1, 'not re-sent after the drop');
    assert.equal(waiter.held, false);
  });

  it('gives up only past the server\'s WAIT plus replyTimeout, and closes that connection', async () => {
    const fl = await t.fencelock({ replyTimeout: 150 });
    const key = uniqueKey('b');
    const holder = fl.lock(key);
    await holder.acquire();
    const waiter = fl.lock(key);
    const started = Date.now();
    const pending = waiter.acquire({ wait: 100 });
    pending.catch(() => {});
    await blockedOn(t.admin, key);
    // Freeze the server past the client's deadline (100 + 150 ms).
    await t.admin.call('DEBUG', 'SLEEP', '0.6');
    await assert.rejects(pending, (err) => {
      assert.ok(err instanceof ReplyTimeoutError, err.stack);
      assert.equal(err.timeout, 250);
      return true;
    });
    assert.ok(Date.now() - started >= 250);
    await waitFor('the abandoned waiter is gone', async () => (await info(t.admin, 'LOCK.INFO', key)).waiters === 0);
    await holder.release();
    assert.equal(await info(t.admin, 'LOCK.INFO', key), null, 'nobody holds it');
  });

  it('a grant whose reply cannot arrive in time is given back, not left until its ttl', async () => {
    const fl = await t.fencelock({ replyTimeout: 100, keyspaceEvents: false });
    const key = uniqueKey('b');
    const holder = fl.lock(key);
    await holder.acquire();
    const waiter = fl.lock(key, { ttl: 60000 });
    const handoffs = await fencelockStat(t.admin, 'handoffs');
    const pending = waiter.acquire({ wait: 200 });
    pending.catch(() => {});
    await blockedOn(t.admin, key);
    // One write: the release hands the lock to the waiter, then the server sleeps before
    // it can send the waiter its token, past the client's deadline (200 + 100 ms).
    await t.admin.pipeline().call('LOCK.RELEASE', key, holder.owner).call('DEBUG', 'SLEEP', '0.6').exec();
    await assert.rejects(pending, ReplyTimeoutError);
    assert.equal(await fencelockStat(t.admin, 'handoffs'), handoffs + 1, 'the server did grant it');
    assert.equal(waiter.held, false);
    await waitFor('the orphaned grant is released', async () =>
      (await info(t.admin, 'LOCK.INFO', key)) === null, { timeout: 3000 });
  });

  it('serves concurrent waiters in arrival order, each on its own connection', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('b');
    const holder = fl.lock(key);
    await holder.acquire();
    const order = [];
    const waiters = [];
    for (let i = 0; i < 3; i++) {
      const w = fl.lock(key);
      waiters.push(w.acquire({ wait: 5000 }).then(async (tok) => { order.push(i); await w.release(); return tok; }));
      await blockedOn(t.admin, key, i + 1);
    }
    await holder.release();
    const tokens = await Promise.all(waiters);
    assert.deepEqual(order, [0, 1, 2]);
    assert.ok(tokens[0] < tokens[1] && tokens[1] < tokens[2]);
  });
});
