'use strict';

// Redis Cluster: three masters with the module; ioredis Cluster and node-redis
// createCluster (v5 and v4). Locks on every master, and a slot that moves (MIGRATE)
// while a lock on it is held and another acquire waits for it.

const { describe, it, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const { setTimeout: delay } = require('node:timers/promises');
const { startCluster, CLUSTER_CLIENTS, waitFor, info, calls, subscribers } = require('../support/harness');
const { Fencelock } = require('..');
const { keySlot } = require('../lib/cluster');

describe('cluster', () => {
  let cluster;
  before(async () => { cluster = await startCluster(); });
  after(async () => { if (cluster) await cluster.stop(); });

  it('computes the slot of a key as the server does', async () => {
    for (const key of ['foo', '123456789', '{user1000}.following', 'a{}b', 'x{a}{b}', '{}{x}', 'ü{ß}']) {
      assert.equal(keySlot(key), await cluster.slotOf(key), key);
    }
  });

  for (const kind of CLUSTER_CLIENTS) {
    describe(kind.name, () => {
      const clients = [];
      const fls = [];
      const fencelock = async (options) => {
        const c = await kind.connect(cluster.masters.map((m) => m.port));
        clients.push(c);
        const fl = new Fencelock(c, options);
        fls.push(fl);
        return fl;
      };
      afterEach(async () => {
        for (const fl of fls.splice(0)) await fl.close();
        for (const c of clients.splice(0)) kind.close(c);
      });

      it('locks keys on every master: acquire, wait, release, token, fenceCall, events', async () => {
        const fl = await fencelock();
        const other = await fencelock();
        for (const master of cluster.masters) {
          const tag = await cluster.keyOn(master, 'every');
          const key = `{${tag}}:lock`;
          const lock = fl.lock(key);
          const token = await lock.acquire();
          assert.ok(token > 0);
          assert.equal((await info(master.admin, 'LOCK.INFO', key)).owner, lock.owner, 'on the master that serves it');
          assert.equal(await lock.fenceCall(`{${tag}}:fence`, 'SET', `{${tag}}:data`, 'v1'), 'OK');
          assert.equal(await master.admin.get(`{${tag}}:data`), 'v1');
          assert.equal(await lock.fenceCheck(`{${tag}}:fence`), true);
          assert.equal((await lock.info()).token, token);
          // A blocking acquire waits on that master and is granted on release.
          const waiter = other.lock(key);
          const pending = waiter.acquire({ wait: 5000 });
          await waitFor('the waiter queues', async () => (await info(master.admin, 'LOCK.INFO', key)).waiters === 1);
          assert.equal(await lock.release(), true);
          const token2 = await pending;
          assert.ok(token2 > token, `${token2} > ${token}`);
          await assert.rejects(lock.fenceCall(`{${tag}}:fence`, 'SET', `{${tag}}:data`, 'v0'), /not held/);
          assert.equal(await waiter.release(), true);
          assert.equal(await info(master.admin, 'LOCK.INFO', key), null);
        }
        // Keyspace events are heard on the node that serves the key.
        const master = cluster.masters[2];
        const tag = await cluster.keyOn(master, 'events');
        const watched = fl.lock(`{${tag}}:lock`, { ttl: 60000, watchdog: false });
        await watched.acquire();
        await waitFor('subscribed on its node', async () =>
          (await subscribers(master.admin, `__keyspace@0__:${watched.key}`)) === 1);
        await master.admin.call('LOCK.EXTEND', watched.key, watched.owner, '30');
        await waitFor('told of the expiry', () => watched.signal.aborted, { timeout: 3000 });
        assert.equal(watched.signal.reason.event, 'lock.expired');
      });

      it('a slot that moves: the holder keeps its lock and releases it there, the waiter follows', async () => {
        const [src, dst, third] = cluster.masters;
        const tag = await cluster.keyOn(src, 'moving');
        const key = `{${tag}}:lock`;
        const slot = await cluster.slotOf(key);
        const holderFl = await fencelock();
        const waiterFl = await fencelock();
        const askFl = await fencelock({ keyspaceEvents: false });
        const holder = holderFl.lock(key, { ttl: 30000 });
        const token = await holder.acquire();
        assert.ok(token > 0);
        // Everyone has routed this slot to src.
        assert.equal(await askFl.lock(key).acquire(), null);
        const before = { src: await calls(src.admin, 'LOCK.ACQUIRE'), dst: await calls(dst.admin, 'LOCK.ACQUIRE') };
        const waiter = waiterFl.lock(key);
        const started = Date.now();
        const pending = waiter.acquire({ wait: 15000 });
        await waitFor('the waiter queues on src', async () => (await info(src.admin, 'LOCK.INFO', key)).waiters === 1);

        await dst.admin.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', src.id);
        await src.admin.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', dst.id);
        assert.equal(await src.admin.call('MIGRATE', '127.0.0.1', dst.port, '', 0, 5000, 'KEYS', key), 'OK');
        // Mid-move: src answers -ASK for the key, which lives on dst now; an acquire sent
        // there with ASKING finds it held, and the holder's fence check runs there. (A
        // fenced call naming two keys missing on both gets -TRYAGAIN: it did not run.)
        const asker = askFl.lock(key);
        assert.equal(await asker.acquire(), null);
        assert.equal(await holder.fenceCheck(`{${tag}}:fence`), true);
        await assert.rejects(holder.fenceCall(`{${tag}}:fence`, 'SET', `{${tag}}:data`, 'moved'), /^RedisReplyError: TRYAGAIN/);
        assert.equal(await src.admin.call('CLUSTER', 'COUNTKEYSINSLOT', slot), 0, 'nothing left on src');

        for (const m of [dst, src, third]) await m.admin.call('CLUSTER', 'SETSLOT', slot, 'NODE', dst.id);
        assert.equal((await cluster.nodeOf(key)).port, dst.port);

        // The holder's lock moved with its key; the waiter, answered -MOVED by src,
        // queues on dst.
        assert.equal((await info(dst.admin, 'LOCK.INFO', key)).owner, holder.owner);
        await waitFor('the waiter queues on dst', async () => {
          const i = await info(dst.admin, 'LOCK.INFO', key);
          return i && i.waiters === 1;
        });
        assert.equal(holder.held, true);
        assert.equal(await holder.extend(), true, 'extends reach it at dst');
        assert.equal(await holder.release(), true, 'released through the redirect');
        const token2 = await pending;
        assert.ok(token2 > token, `${token2} > ${token}`);
        assert.ok(Date.now() - started < 15000);
        assert.equal((await info(dst.admin, 'LOCK.INFO', key)).owner, waiter.owner);
        assert.equal(await waiter.fenceCall(`{${tag}}:fence`, 'SET', `{${tag}}:data`, 'after'), 'OK');
        await assert.rejects(holder.fenceCall(`{${tag}}:fence`, 'SET', `{${tag}}:data`, 'old'), /not held/);
        assert.equal(await waiter.release(), true);
        assert.equal(await info(dst.admin, 'LOCK.INFO', key), null);
        // The waiter's acquire ran once on each node (src's -MOVED is no second run).
        assert.equal(await calls(src.admin, 'LOCK.ACQUIRE') - before.src, 1, 'on src');
        // dst: the waiter's, plus the asker's one try (with ASKING).
        assert.equal(await calls(dst.admin, 'LOCK.ACQUIRE') - before.dst, 2, 'on dst');
        // Put the slot back for the next client's run.
        await dst.admin.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', src.id);
        await src.admin.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', dst.id);
        const left = await dst.admin.call('CLUSTER', 'GETKEYSINSLOT', slot, 100);
        if (left.length) await dst.admin.call('MIGRATE', '127.0.0.1', src.port, '', 0, 5000, 'KEYS', ...left);
        for (const m of [src, dst, third]) await m.admin.call('CLUSTER', 'SETSLOT', slot, 'NODE', src.id);
      });

      // The lock logic is the same for every client: one of them is enough here.
      if (kind === CLUSTER_CLIENTS[0]) {
        it('an acquire redirected by a move keeps its deadline (the WAIT shrinks)', async () => {
          const [src, dst, third] = cluster.masters;
          const tag = await cluster.keyOn(src, 'deadline');
          const key = `{${tag}}:lock`;
          const slot = await cluster.slotOf(key);
          const fl = await fencelock({ keyspaceEvents: false });
          const holder = fl.lock(key);
          await holder.acquire();
          const waiter = (await fencelock({ keyspaceEvents: false })).lock(key);
          const started = Date.now();
          const pending = waiter.acquire({ wait: 2000 });
          await waitFor('the waiter queues on src', async () => (await info(src.admin, 'LOCK.INFO', key)).waiters === 1);
          await delay(1000 - (Date.now() - started)); // half its wait spent on src
          await dst.admin.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', src.id);
          await src.admin.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', dst.id);
          await src.admin.call('MIGRATE', '127.0.0.1', dst.port, '', 0, 5000, 'KEYS', key);
          for (const m of [dst, src, third]) await m.admin.call('CLUSTER', 'SETSLOT', slot, 'NODE', dst.id);
          assert.equal(await pending, null, 'not granted: the holder kept it');
          const took = Date.now() - started;
          // Re-sent with the whole WAIT it would have taken 3000 ms or more.
          assert.ok(took >= 1900 && took < 2700, `settled after ${took} ms, not about 2000`);
          assert.equal(await holder.release(), true);
          await dst.admin.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', src.id);
          await src.admin.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', dst.id);
          const left = await dst.admin.call('CLUSTER', 'GETKEYSINSLOT', slot, 100);
          if (left.length) await dst.admin.call('MIGRATE', '127.0.0.1', src.port, '', 0, 5000, 'KEYS', ...left);
          for (const m of [src, dst, third]) await m.admin.call('CLUSTER', 'SETSLOT', slot, 'NODE', src.id);
        });
      }
    });
  }
});
