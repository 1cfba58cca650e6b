'use strict';

// How the package meets each client: database numbers, URLs, RESP3, the clients it
// refuses, its two entry points and its type declarations.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const fs = require('node:fs');
const { execFile } = require('node:child_process');
const IORedis = require('ioredis');
const redis5 = require('redis');
const {
  startServer, CLIENTS, info, uniqueKey, waitFor, subscribers,
} = require('../support/harness');
const fencelock = require('..');

const { Fencelock } = fencelock;
const root = path.join(__dirname, '..');

describe('clients', () => {
  let server;
  before(async () => { server = await startServer(); });
  after(async () => { if (server) await server.stop(); });

  const dbOptions = {
    ioredis: { db: 3 },
    'redis@5': { database: 3 },
    'redis@4': { database: 3 },
  };
  for (const kind of CLIENTS) {
    it(`${kind.name}: works in the client's database, and hears that database's events`, async () => {
      const client = await kind.connect(server.port, dbOptions[kind.name]);
      const fl = new Fencelock(client, { watchdog: false });
      try {
        const key = uniqueKey('db');
        const lock = fl.lock(key, { ttl: 60000 });
        await lock.acquire();
        const db3 = server.admin.duplicate({ db: 3 });
        assert.equal((await info(db3, 'LOCK.INFO', key)).owner, lock.owner);
        assert.equal(await server.admin.exists(key), 0, 'nothing in database 0');
        const channel = `__keyspace@3__:${key}`;
        await waitFor('subscribed in db 3', async () => (await subscribers(server.admin, channel)) === 1);
        await db3.call('LOCK.EXTEND', key, lock.owner, '30');
        await waitFor('told of the expiry', () => lock.signal.aborted, { timeout: 3000 });
        assert.equal(lock.signal.reason.event, 'lock.expired');
        db3.disconnect();
      } finally {
        await fl.close();
        kind.close(client);
      }
    });
  }

  it('redis@5 with a URL and RESP3 (INFO replies as maps)', async () => {
    const client = redis5.createClient({ url: `redis://127.0.0.1:${server.port}/2`, RESP: 3 });
    client.on('error', () => {});
    await client.connect();
    const fl = new Fencelock(client);
    try {
      const key = uniqueKey('resp3');
      const rw = fl.rwlock(key);
      const token = await rw.read.acquire();
      const i = await rw.info();
      assert.equal(i.mode, 'read');
      assert.deepEqual(i.holders.map((h) => [h.owner, h.mode, h.token]), [[rw.owner, 'read', token]]);
      const lock = fl.lock(uniqueKey('resp3'));
      await lock.acquire();
      assert.equal((await lock.info()).owner, lock.owner);
      await rw.read.release();
      await lock.release();
      // Keyspace events reach a RESP3 client's subscriber too.
      const watched = fl.lock(uniqueKey('resp3'), { ttl: 60000, watchdog: false });
      await watched.acquire();
      await waitFor('subscribed in db 2', async () =>
        (await subscribers(server.admin, `__keyspace@2__:${watched.key}`)) === 1);
      const db2 = server.admin.duplicate({ db: 2 });
      await db2.call('LOCK.EXTEND', watched.key, watched.owner, '30');
      db2.disconnect();
      await waitFor('told of the expiry', () => watched.signal.aborted, { timeout: 3000 });
      assert.equal(watched.signal.reason.event, 'lock.expired');
    } finally {
      await fl.close();
      client.destroy();
    }
  });

  it('ioredis with a URL, a key prefix and stringNumbers', async () => {
    const client = new IORedis(`redis://127.0.0.1:${server.port}/0`, { keyPrefix: 'app:', stringNumbers: true, lazyConnect: true });
    const fl = new Fencelock(client);
    try {
      const key = uniqueKey('url');
      const lock = fl.lock(key);
      const token = await lock.acquire();
      assert.equal(typeof token, 'number');
      // Keys go to the server as given: fencelock's commands are not ioredis-prefixed.
      assert.equal((await info(server.admin, 'LOCK.INFO', key)).owner, lock.owner);
      await lock.release();
    } finally {
      await fl.close();
      client.disconnect();
    }
  });

  it('refuses what it cannot drive, with a message that says so', () => {
    assert.throws(() => new Fencelock(null), /expected an ioredis or node-redis client, got null/);
    assert.throws(() => new Fencelock({}), /expected an ioredis or node-redis \(redis v4\/v5\) client/);
    const client = new IORedis({ lazyConnect: true });
    assert.throws(() => new Fencelock(client, { ttl: -5 }), /ttl must be an integer/);
    assert.throws(() => new Fencelock(client, { ttl: 1000, renewInterval: 1000 }), /renewInterval must be an integer from 1 to 999/);
    assert.throws(() => new Fencelock(client, { keyspaceEvents: 'yes' }), /keyspaceEvents must be/);
    assert.throws(() => new Fencelock(client, { replyTimout: 5 }), /unknown option "replyTimout"/);
  });

  it('takes an adapter written for another client', async () => {
    // A minimal adapter over ioredis, as a user would write one for another library.
    const base = new IORedis({ host: '127.0.0.1', port: server.port, lazyConnect: true });
    const opened = [];
    const adapter = {
      kind: 'custom',
      db: 0,
      async open(purpose) {
        opened.push(purpose);
        const c = base.duplicate({ lazyConnect: true, retryStrategy: () => null });
        await c.connect();
        return {
          send: (args) => c.call(...args),
          subscribe: async (channel, fn) => { c.on('message', (ch, m) => ch === channel && fn(m)); await c.subscribe(channel); },
          unsubscribe: (channel) => c.unsubscribe(channel),
          destroy: () => c.disconnect(),
          close: async () => { await c.quit(); },
          get closed() { return c.status !== 'ready'; },
        };
      },
    };
    const fl = new Fencelock(adapter, { keyspaceEvents: false });
    try {
      assert.equal(fl.clientKind, 'custom');
      const a = fl.lock(uniqueKey('custom'));
      await a.acquire();
      const b = fl.lock(a.key);
      const pending = b.acquire({ wait: 5000 });
      await waitFor('b waits', async () => (await info(server.admin, 'LOCK.INFO', a.key)).waiters === 1);
      await a.release();
      assert.ok(await pending > a.token);
      await b.release();
      assert.deepEqual(opened.sort(), ['blocking', 'command']);
    } finally {
      await fl.close();
    }
  });
});

describe('package', () => {
  it('the ESM entry exports the same objects as the CommonJS one', async () => {
    const esm = await import(path.join(root, 'index.mjs'));
    const names = Object.keys(fencelock).sort();
    assert.deepEqual(Object.keys(esm).filter((k) => k !== 'default').sort(), names);
    for (const k of names) assert.equal(esm[k], fencelock[k], k);
    assert.equal(esm.default, fencelock);
  });

  it('index.d.ts declares every export, and only those', () => {
    const dts = fs.readFileSync(path.join(root, 'index.d.ts'), 'utf8');
    const declared = [...dts.matchAll(/^export declare (?:class|function) (\w+)/gm)].map((m) => m[1]).sort();
    assert.deepEqual(declared, Object.keys(fencelock).sort());
  });

  it('the declarations type-check the README\'s usage and refuse misuse (tsc --strict)', async () => {
    const tsc = path.join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const project = path.join(root, 'support', 'types', 'tsconfig.json');
    const { code, out } = await new Promise((resolve) => {
      execFile(process.execPath, [tsc, '-p', project], { cwd: root }, (err, stdout, stderr) =>
        resolve({ code: err ? err.code : 0, out: stdout + stderr }));
    });
    assert.equal(code, 0, out);
  });
});
