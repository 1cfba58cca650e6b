'use strict';

const { it } = require('node:test');
const assert = require('node:assert/strict');
const { forEachClient, uniqueKey, waitFor } = require('../support/harness');
const { StaleTokenError, RedisReplyError, LockLostError, FencelockError, fenceCallArgs } = require('..');

// MULTI with the application's own client, each library in its own way.
async function multiExec(kind, client, commands) {
  if (kind.name === 'ioredis') {
    const m = client.multi();
    for (const args of commands) m.call(...args);
    return (await m.exec()).map(([err, reply]) => err || reply);
  }
  const m = client.multi();
  for (const args of commands) m.addCommand(args);
  try {
    return await m.exec();
  } catch (err) {
    // node-redis rejects the whole EXEC when one reply is an error; it keeps them all.
    if (err.replies) return err.replies;
    throw err;
  }
}

forEachClient('fencing', (t) => {
  it('next, current and check', async () => {
    const fl = await t.fencelock();
    const fence = fl.fence(uniqueKey('f'));
    assert.equal(await fence.current(), 0);
    const n = await fence.next();
    assert.ok(Number.isSafeInteger(n) && n > 0);
    assert.equal(await fence.current(), n);
    assert.equal(await fence.check(n), true);
    assert.equal(await fence.check(BigInt(n) + 1n), true, 'bigint tokens work');
    assert.equal(await fence.check(String(n + 1)), true, 'so do decimal strings');
    await assert.rejects(fence.check(n), (err) => {
      assert.ok(err instanceof StaleTokenError && err instanceof RedisReplyError);
      assert.equal(err.token, n);
      assert.equal(err.highest, n + 1);
      assert.equal(err.message, `STALE token ${n} is older than ${n + 1}`);
      return true;
    });
    assert.equal(await fence.current(), n + 1, 'a refused check records nothing');
  });

  it('call runs the command behind the fence and returns its own reply', async () => {
    const fl = await t.fencelock();
    const key = uniqueKey('f');
    const fence = fl.fence(`{${key}}:fence`);
    const count = `{${key}}:count`;
    const tok = await fence.next();
    assert.equal(await fence.call(tok, 'INCRBY', count, 5), 5);
    assert.equal(await fence.call(tok, 'SET', `{${key}}:s`, Buffer.from('bytes')), 'OK');
    await assert.rejects(fence.call(tok - 1, 'INCRBY', count, 5), StaleTokenError);
    assert.equal(await t.admin.get(count), '5', 'the stale INCRBY did not run');
    await assert.rejects(fence.call(tok, 'BLPOP', count, 0), (err) =>
      err instanceof RedisReplyError && /FENCE.CALL cannot run blpop/i.test(err.message));
  });

  it('refuses bad tokens and arguments before sending', async () => {
    const fl = await t.fencelock();
    const fence = fl.fence(uniqueKey('f'));
    for (const bad of [0, -1, 1.5, NaN, 2 ** 53, '0', '01', 'x', null, undefined, 0n]) {
      await assert.rejects(fence.check(bad), { name: 'RangeError', message: /token must be a positive integer/ }, String(bad));
    }
    await assert.rejects(fence.call(1, ''), /command must be a non-empty string/);
    await assert.rejects(fence.call(1, 'SET', 'k', { no: 'objects' }), /strings, Buffers or finite numbers/);
    assert.throws(() => fl.fence(''), /key must be a non-empty string/);
    assert.equal(await fence.current(), 0, 'nothing reached the server');
  });

  it('the fenced work queue recipe: a holder past its lease can neither push nor ack', async () => {
    const fl = await t.fencelock({ keyspaceEvents: false });
    const tag = uniqueKey('q');
    const lockKey = `{${tag}}:lock`;
    const fenceKey = `{${tag}}:fence`;
    const jobs = `{${tag}}:jobs`;
    const a = fl.lock(lockKey, { ttl: 100, watchdog: false });
    const ta = await a.acquire();
    assert.equal(await a.fenceCall(fenceKey, 'LPUSH', jobs, 'job-1'), 1);
    await waitFor('a\'s lease is over', () => a.signal.aborted, { timeout: 2000 });
    const b = fl.lock(lockKey);
    await waitFor('b takes over', async () => (await b.acquire()) !== null);
    assert.ok(b.token > ta);
    assert.equal(await b.fenceCall(fenceKey, 'LPUSH', jobs, 'job-2'), 2);
    await assert.rejects(a.fenceCall(fenceKey, 'LREM', jobs, 1, 'job-1'), LockLostError);
    await assert.rejects(fl.fence(fenceKey).call(ta, 'LREM', jobs, 1, 'job-1'), StaleTokenError);
    assert.deepEqual(await t.admin.lrange(jobs, 0, -1), ['job-2', 'job-1']);
    await b.release();
    await assert.rejects(b.fenceCall(fenceKey, 'LPUSH', jobs, 'x'), (err) =>
      err instanceof FencelockError && /is not held/.test(err.message));
  });

  it('fenceCallArgs for MULTI on the application\'s own client', async () => {
    const fl = await t.fencelock();
    const client = await t.client();
    const key = uniqueKey('m');
    const fenceKey = `{${key}}:fence`;
    const tok = await fl.fence(fenceKey).next();
    const ok = await multiExec(t.kind, client, [
      fenceCallArgs(fenceKey, tok, 'SET', `{${key}}:a`, 1),
      fenceCallArgs(fenceKey, tok, 'INCR', `{${key}}:a`),
    ]);
    assert.deepEqual(ok, ['OK', 2]);
    const stale = await multiExec(t.kind, client, [
      fenceCallArgs(fenceKey, tok - 1, 'SET', `{${key}}:a`, 100),
      ['GET', `{${key}}:a`],
    ]);
    assert.match(String(stale[0].message), /^STALE/);
    assert.equal(stale[1], '2', 'the stale SET did not run inside MULTI');
  });
});
