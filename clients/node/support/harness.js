'use strict';

// Test harness: a real redis-server with the module, on a free loopback port, started
// and stopped by the tests; the three clients the package supports; polling helpers.

const { spawn } = require('node:child_process');
const net = require('node:net');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { setTimeout: delay } = require('node:timers/promises');
const IORedis = require('ioredis');
const redis5 = require('redis');
const redis4 = require('redis4');

// Servers (and their directories) still up when the test process exits, however it exits.
const live = new Map();
process.on('exit', () => {
  for (const [child, dir] of live) {
    child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.once(sig, () => process.exit(1));

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function modulePath() {
  const mod = process.env.FENCELOCK_MODULE;
  if (!mod) throw new Error('FENCELOCK_MODULE is not set: point it at libfencelock.so');
  if (!fs.existsSync(mod)) throw new Error(`FENCELOCK_MODULE=${mod} does not exist`);
  return path.resolve(mod);
}

async function startServer(extraArgs = []) {
  const mod = modulePath();
  const bin = process.env.REDIS_SERVER || 'redis-server';
  let lastErr;
  // Another process may take the port between freePort() and the bind: try again.
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fencelock-node-'));
    const args = [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '',
      '--appendonly', 'no', '--logfile', '', '--daemonize', 'no',
      '--notify-keyspace-events', 'KEA', '--enable-debug-command', 'yes',
      '--loadmodule', mod, ...extraArgs,
    ];
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    live.set(child, dir);
    let out = '';
    const ready = new Promise((resolve, reject) => {
      const onData = (d) => {
        out += d;
        if (out.includes('Ready to accept connections')) resolve();
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.on('error', (err) => reject(new Error(`cannot run ${bin}: ${err.message}`)));
      child.on('exit', (code) => reject(new Error(`${bin} exited with ${code}:\n${out}`)));
    });
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${bin} was not ready within 10 s:\n${out}`)), 10000);
    });
    try {
      await Promise.race([ready, timeout]);
    } catch (err) {
      clearTimeout(timer);
      child.kill('SIGKILL');
      live.delete(child);
      fs.rmSync(dir, { recursive: true, force: true });
      lastErr = err;
      if (/Address already in use/.test(out)) continue;
      throw err;
    }
    clearTimeout(timer);
    const admin = new IORedis({ host: '127.0.0.1', port, lazyConnect: true, maxRetriesPerRequest: 1 });
    admin.on('error', () => {});
    await admin.connect();
    return {
      port,
      admin,
      async stop() {
        admin.disconnect();
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
        live.delete(child);
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  throw lastErr;
}

// The clients the package is tested against. `options` are the client's own.
const CLIENTS = [
  {
    name: 'ioredis',
    async connect(port, options = {}) {
      const c = new IORedis({ host: '127.0.0.1', port, lazyConnect: true, ...options });
      c.on('error', () => {});
      await c.connect();
      return c;
    },
    close(c) { c.disconnect(); },
  },
  {
    name: 'redis@5',
    async connect(port, options = {}) {
      const { socket, ...rest } = options;
      const c = redis5.createClient({ socket: { host: '127.0.0.1', port, ...socket }, ...rest });
      c.on('error', () => {});
      await c.connect();
      return c;
    },
    close(c) { if (c.isOpen) c.destroy(); },
  },
  {
    name: 'redis@4',
    async connect(port, options = {}) {
      const { socket, ...rest } = options;
      const c = redis4.createClient({ socket: { host: '127.0.0.1', port, ...socket }, ...rest });
      c.on('error', () => {});
      await c.connect();
      return c;
    },
    close(c) { if (c.isOpen) c.disconnect().catch(() => {}); },
  },
];

// Polls `fn` until it returns something truthy; fails with `what` at the deadline.
async function waitFor(what, fn, { timeout = 5000, interval = 10 } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for: ${what}`);
    await delay(interval);
  }
}

async function infoFields(admin, section) {
  const text = await admin.info(section);
  const out = {};
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

// How many times the server ran `command` (INFO commandstats).
async function calls(admin, command) {
  const f = await infoFields(admin, 'commandstats');
  const v = f[`cmdstat_${command.toLowerCase()}`];
  return v ? Number(/calls=(\d+)/.exec(v)[1]) : 0;
}

async function fencelockStat(admin, name) {
  const f = await infoFields(admin, 'fencelock');
  return Number(f[`fencelock_${name}`]);
}

async function subscribers(admin, channel) {
  const [, n] = await admin.call('PUBSUB', 'NUMSUB', channel);
  return Number(n);
}

// LOCK.INFO and friends as an object (ioredis replies with flat arrays).
async function info(admin, command, key) {
  const r = await admin.call(command, key);
  if (r === null) return null;
  const obj = {};
  for (let i = 0; i < r.length; i += 2) {
    obj[r[i]] = r[i] === 'holders' ? r[i + 1].map((h) => {
      const e = {};
      for (let j = 0; j < h.length; j += 2) e[h[j]] = h[j + 1];
      return e;
    }) : r[i + 1];
  }
  return obj;
}

let keySeq = 0;
const uniqueKey = (name) => `${name}:${process.pid}:${++keySeq}`;

// Blocks this thread, timers and sockets included: a garbage-collection pause or a
// stopped VM as the process itself would live through it.
function stall(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

module.exports = {
  startServer, CLIENTS, waitFor, calls, fencelockStat, subscribers, info, uniqueKey, stall,
  infoFields,
};

// describe(title) with one server for the file and, inside, one describe per client:
// `body(t)` declares the tests once; t.fencelock() makes a Fencelock on a fresh client
// of that kind, closed after each test.
function forEachClient(title, body, { serverArgs = [] } = {}) {
  const { describe, before, after, afterEach } = require('node:test');
  const { Fencelock } = require('..');
  describe(title, () => {
    let server;
    before(async () => { server = await startServer(serverArgs); });
    after(async () => { if (server) await server.stop(); });
    for (const kind of CLIENTS) {
      describe(kind.name, () => {
        const clients = [];
        const fls = [];
        const t = {
          kind,
          get port() { return server.port; },
          get admin() { return server.admin; },
          async client(options) {
            const c = await kind.connect(server.port, options);
            clients.push(c);
            return c;
          },
          async fencelock(options, clientOptions) {
            const fl = new Fencelock(await t.client(clientOptions), options);
            fls.push(fl);
            return fl;
          },
        };
        afterEach(async () => {
          for (const fl of fls.splice(0)) await fl.close();
          for (const c of clients.splice(0)) kind.close(c);
        });
        body(t);
      });
    }
  });
}

module.exports.forEachClient = forEachClient;
