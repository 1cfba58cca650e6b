'use strict';

// The watchdog keeps a held lease alive, stops on release, and the holder is told,
// through its AbortSignal, the 'lost' event and onLockLost, when the lease is lost.

const { it } = require('node:test');
const assert = require('node:assert/strict');
const { setTimeout: delay } = require('node:timers/promises');
const {
  forEachClient, info, uniqueKey, waitFor, calls, subscribers, stall,
} = require('../support/harness');
const { LockLostError, StaleTokenError } = require('..');

function lostRecorder(lock) {
  const seen = [];
  lock.on('lost', (err) => seen.push(err));
  return seen;
}

forEachClient('watchdog and lost-lock signal', (t) => {
  it('extends the lease while held, far past its ttl', async () => {
    const fl = await t.fencelock({ keyspaceEvents: false });
    const key = uniqueKey('w');
    const lock = fl.lock(key, { ttl: 300, renewInterval: 100 });
    const token = await lock.acquire();
    const start = await calls(t.admin, 'lock.extend');
    const startedAt = Date.now();
    // Six renewals: at least 600 ms, twice the ttl.
    await waitFor('six renewals', async () => (await calls(t.admin, 'lock.extend')) >= start + 6);
    assert.ok(Date.now() - startedAt >= 500);
    const server = await info(t.admin, 'LOCK.INFO', key);
    assert.equal(server.owner, lock.owner);
    assert.equal(server.token, token);
    assert.equal(lock.signal.aborted, false);
    await lock.release();
  });

  it('uses a third of the ttl by default (Redisson\'s 30 s lease, 10 s renewal)', async () => {
    const fl = await t.fencelock();
    assert.equal(fl.ttl, 30000);
    const lock = fl.lock(uniqueKey('w'));
    assert.equal(lock.ttl, 30000);
    assert.equal(lock.renewInterval, 10000);
    assert.equal(fl.lock(uniqueKey('w'), { ttl: 900 }).renewInterval, 300);
    assert.equal(fl.rwlock(uniqueKey('w'), { ttl: 600 }).renewInterval, 200);
    const custom = await t.fencelock({ ttl: 1000, renewInterval: 100 });
    assert.equal(custom.lock(uniqueKey('w')).renewInterval, 100);
    assert.equal(custom.semaphore(uniqueKey('w'), { limit: 1 }).renewInterval, 100);
    assert.equal(custom.lock(uniqueKey('w'), { ttl: 3000 }).renewInterval, 1000, 'a third of a ttl of its own');
  });

  it('a lease longer than a timer can count (2^40 ms) is renewed no sooner than due', async () => {
    const fl = await t.fencelock({ keyspaceEvents: false });
    const lock = fl.lock(uniqueKey('w'), { ttl: 2 ** 40 });
    const start = await calls(t.admin, 'lock.extend');
    await lock.acquire();
    // setTimeout would fire such delays at once, renewing in a busy loop.
    await delay(100);
    assert.equal(await calls(t.admin, 'lock.extend'), start);
    assert.equal(lock.signal.aborted, false);
    assert.ok(lock.remaining > 2 ** 39);
    await lock.release();
  });

  it('stops renewing on release', async () => {
    const fl = await t.fencelock({ keyspaceEvents: false });
    const key = uniqueKey('w');
    const lock = fl.lock(key, { ttl: 300, renewInterval: 50 });
    await lock.acquire();
    const start = await calls(t.admin, 'lock.extend');
    await waitFor('a renewal', async () => (await calls(t.admin, 'lock.extend')) > start);
    await lock.release();
    const after = await calls(t.admin, 'lock.extend');
    // Four renewal periods with nothing to renew: none may be sent.
    await delay(200);
    assert.equal(await calls(t.admin, 'lock.extend'), after);
    assert.equal(lock.signal.aborted, false, 'a release is not a loss');
  });

  it('a stalled holder (event loop paused past its lease) is told on waking, and fencing refuses it', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('w');
    const fenceKey = `${key}:fence`;
    const dataKey = `${key}:data`;
    const callbacks = [];
    const a = fl.lock(key, { ttl: 200, renewInterval: 60, onLockLost: (err) => callbacks.push(err) });
    const events = lostRecorder(a);
    const ta = await a.acquire();
    assert.equal(await a.fenceCall(fenceKey, 'SET', dataKey, 'from-a'), 'OK');
    const signal = a.signal;
    // The process stops for three leases: no renewal can go out.
    stall(600);
    // The server ended the lease during the stall.
    assert.equal(await t.admin.call('LOCK.INFO', key), null);
    await waitFor('the signal aborts', () => signal.aborted, { timeout: 2000 });
    assert.ok(signal.reason instanceof LockLostError);
    assert.equal(signal.reason.key, key);
    assert.equal(signal.reason.token, ta);
    assert.equal(a.held, false);
    assert.equal(callbacks.length, 1);
    assert.equal(events.length, 1);
    assert.equal(callbacks[0], signal.reason);
    // The next holder writes; the old one is refused at the resource.
    const b = fl.lock(key);
    const tb = await b.acquire();
    assert.ok(tb > ta);
    assert.equal(await b.fenceCall(fenceKey, 'SET', dataKey, 'from-b'), 'OK');
    await assert.rejects(a.fenceCall(fenceKey, 'SET', dataKey, 'late-a'), (err) => err === signal.reason);
    await assert.rejects(fl.fence(fenceKey).call(ta, 'SET', dataKey, 'late-a'), StaleTokenError);
    assert.equal(await t.admin.get(dataKey), 'from-b');
    await b.release();
  });

  it('a holder whose renewal is refused is told (reason extend-refused)', async () => {
    const fl = await t.fencelock({ keyspaceEvents: false });
    const key = uniqueKey('w');
    const a = fl.lock(key, { ttl: 2000, renewInterval: 50 });
    const events = lostRecorder(a);
    await a.acquire();
    // An operator deletes the key and someone else takes the lock.
    await t.admin.del(key);
    await t.admin.call('LOCK.ACQUIRE', key, 'intruder', '60000');
    await waitFor('the signal aborts', () => a.signal.aborted, { timeout: 2000 });
    assert.equal(a.signal.reason.reason, 'extend-refused');
    assert.equal(events.length, 1);
    assert.equal(await a.release(), false, 'nothing left to release');
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).owner, 'intruder', 'the other owner keeps it');
  });

  it('a lock.expired keyspace event tells the holder at once, long before its own deadline', async () => {
    const fl = await t.fencelock({ watchdog: false });
    const key = uniqueKey('w');
    const a = fl.lock(key, { ttl: 60000 });
    const events = lostRecorder(a);
    await a.acquire();
    const channel = `__keyspace@0__:${key}`;
    await waitFor('subscribed to the key\'s events', async () => (await subscribers(t.admin, channel)) === 1);
    // The lease is cut short behind the holder's back; the server ends it in 50 ms.
    assert.equal(await t.admin.call('LOCK.EXTEND', key, a.owner, '50'), 1);
    const started = Date.now();
    await waitFor('the signal aborts', () => a.signal.aborted, { timeout: 3000 });
    assert.ok(Date.now() - started < 3000);
    assert.equal(a.signal.reason.reason, 'event');
    assert.equal(a.signal.reason.event, 'lock.expired');
    assert.equal(events.length, 1);
    await waitFor('unsubscribed once nothing is held', async () => (await subscribers(t.admin, channel)) === 0);
  });

  it('other owners\' grants and releases on the key do not read as a loss', async () => {
    const fl = await t.fencelock({ watchdog: false });
    const key = uniqueKey('w');
    const sem = fl.semaphore(key, { limit: 3, ttl: 60000 });
    await sem.acquire();
    const channel = `__keyspace@0__:${key}`;
    await waitFor('subscribed', async () => (await subscribers(t.admin, channel)) === 1);
    const before = await calls(t.admin, 'sem.info');
    for (let i = 0; i < 5; i++) {
      await t.admin.call('SEM.ACQUIRE', key, `other${i}`, '3', '60000');
      await t.admin.call('SEM.RELEASE', key, `other${i}`);
    }
    // Another holder's lease ends: that event is checked, and this hold survives it.
    await t.admin.call('SEM.ACQUIRE', key, 'short', '3', '30');
    await waitFor('the short lease ended and was checked', async () => (await calls(t.admin, 'sem.info')) > before);
    assert.equal(await calls(t.admin, 'sem.info'), before + 1, 'only the expiry was checked');
    assert.equal(sem.signal.aborted, false);
    assert.equal(sem.held, true);
    await sem.release();
  });

  it('without a watchdog the signal aborts when the lease runs out (reason deadline)', async () => {
    const fl = await t.fencelock({ watchdog: false, keyspaceEvents: false });
    const key = uniqueKey('w');
    const a = fl.lock(key, { ttl: 150 });
    const started = performance.now();
    await a.acquire();
    let abortedAt;
    a.signal.addEventListener('abort', () => { abortedAt = performance.now(); });
    await waitFor('the signal aborts', () => a.signal.aborted, { timeout: 2000 });
    const took = abortedAt - started;
    // Counted from before the acquire was sent, less the clock-rate margin (3 ms here),
    // so the signal fires before the server ends the lease, give or take timer lateness.
    assert.ok(took >= 140 && took < 175, `aborted after ${took} ms`);
    assert.equal(a.signal.reason.reason, 'deadline');
  });

  it('keeps renewing through a dropped connection', async () => {
    const fl = await t.fencelock({ keyspaceEvents: false });
    const key = uniqueKey('w');
    const a = fl.lock(key, { ttl: 800, renewInterval: 100 });
    await a.acquire();
    await waitFor('a renewal', async () => (await calls(t.admin, 'lock.extend')) > 0);
    await t.admin.call('CLIENT', 'KILL', 'SKIPME', 'yes');
    const after = await calls(t.admin, 'lock.extend');
    await waitFor('renewals resume', async () => (await calls(t.admin, 'lock.extend')) >= after + 3);
    assert.equal(a.signal.aborted, false);
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).owner, a.owner);
    await a.release();
  });

  it('close() reports held locks lost (reason closed) and stops their watchdog', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('w');
    const a = fl.lock(key, { ttl: 5000 });
    await a.acquire();
    await fl.close();
    assert.equal(a.signal.aborted, true);
    assert.equal(a.signal.reason.reason, 'closed');
    assert.equal((await info(t.admin, 'LOCK.INFO', key)).owner, a.owner, 'not released: it ends at its ttl');
  });
});
