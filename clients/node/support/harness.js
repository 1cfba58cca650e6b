'use strict';

// Test harness: a real redis-server with the module, on a free loopback port, started
// and stopped by the tests; the three clients the package supports; polling helpers.

const { spawn, execFile } = require('node:child_process');
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

// `extraArgs`: more arguments for redis-server, or a function of the server's directory
// returning them.
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
      '--loadmodule', mod, ...(typeof extraArgs === 'function' ? extraArgs(dir) : extraArgs),
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

// redis-cli: $REDIS_CLI, else the one beside $REDIS_SERVER, else the PATH's.
function redisCli() {
  if (process.env.REDIS_CLI) return process.env.REDIS_CLI;
  const server = process.env.REDIS_SERVER;
  if (server && server.includes('/')) {
    const beside = path.join(path.dirname(server), 'redis-cli');
    if (fs.existsSync(beside)) return beside;
  }
  return 'redis-cli';
}

// A cluster of three masters (no replicas), each a redis-server with the module,
// joined with `redis-cli --cluster create`; resolves once every node reports
// cluster_state:ok and knows the whole slot map. `masters[i]` has { port, admin, id,
// slots: [[start, end], ...] }; `nodeOf(key)` is the master serving a key now.
async function startCluster() {
  const masters = [];
  try {
    for (let i = 0; i < 3; i++) {
      masters.push(await startServer((dir) => [
        '--cluster-enabled', 'yes', '--cluster-config-file', path.join(dir, 'nodes.conf'),
        '--cluster-node-timeout', '1000',
      ]));
    }
    const cli = redisCli();
    const out = await new Promise((resolve, reject) => {
      execFile(cli, ['--cluster', 'create', ...masters.map((m) => `127.0.0.1:${m.port}`),
        '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${cli} --cluster create failed: ${err.message}\n${stdout}${stderr}`));
        else resolve(stdout);
      });
    });
    await waitFor('every node reports cluster_state:ok', async () => {
      for (const m of masters) {
        const f = parseInfo(await m.admin.call('CLUSTER', 'INFO'));
        if (f.cluster_state !== 'ok' || f.cluster_known_nodes !== '3' || f.cluster_slots_ok !== '16384') return false;
      }
      return true;
    }, { timeout: 20000, interval: 50, detail: () => out });
    for (const m of masters) m.id = await m.admin.call('CLUSTER', 'MYID');
  } catch (err) {
    await Promise.allSettled(masters.map((m) => m.stop()));
    throw err;
  }
  const cluster = {
    masters,
    async refreshSlots() {
      for (const m of masters) m.slots = [];
      for (const [start, end, [, port]] of await masters[0].admin.call('CLUSTER', 'SLOTS')) {
        masters.find((m) => m.port === Number(port)).slots.push([Number(start), Number(end)]);
      }
    },
    async slotOf(key) { return Number(await masters[0].admin.call('CLUSTER', 'KEYSLOT', key)); },
    async nodeOf(key) {
      const slot = await cluster.slotOf(key);
      await cluster.refreshSlots();
      return masters.find((m) => m.slots.some(([a, b]) => slot >= a && slot <= b));
    },
    // A key (with the hash tag `{tag}`) that `master` serves: `{tag}` + suffix.
    async keyOn(master, name) {
      await cluster.refreshSlots();
      for (let i = 0; ; i++) {
        const tag = `${name}:${process.pid}:${++keySeq}:${i}`;
        const slot = await cluster.slotOf(`{${tag}}`);
        if (master.slots.some(([a, b]) => slot >= a && slot <= b)) return tag;
      }
    },
    async stop() { await Promise.allSettled(masters.map((m) => m.stop())); },
  };
  await cluster.refreshSlots();
  return cluster;
}

function parseInfo(text) {
  const out = {};
  for (const line of String(text).split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
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

// The cluster clients, each from the addresses of the cluster's masters.
const CLUSTER_CLIENTS = [
  {
    name: 'ioredis Cluster',
    async connect(ports) {
      const c = new IORedis.Cluster(ports.map((port) => ({ host: '127.0.0.1', port })), { lazyConnect: true });
      c.on('error', () => {});
      await c.connect();
      return c;
    },
    close(c) { c.disconnect(); },
  },
  {
    name: 'redis@5 createCluster',
    async connect(ports) {
      const c = redis5.createCluster({ rootNodes: ports.map((port) => ({ url: `redis://127.0.0.1:${port}` })) });
      c.on('error', () => {});
      await c.connect();
      return c;
    },
    close(c) { if (c.isOpen) c.destroy(); },
  },
  {
    name: 'redis@4 createCluster',
    async connect(ports) {
      const c = redis4.createCluster({ rootNodes: ports.map((port) => ({ url: `redis://127.0.0.1:${port}` })) });
      c.on('error', () => {});
      await c.connect();
      return c;
    },
    close(c) { c.disconnect().catch(() => {}); },
  },
];

// Polls `fn` until it returns something truthy; fails with `what` at the deadline.
async function waitFor(what, fn, { timeout = 5000, interval = 10, detail } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeout} ms waiting for: ${what}${detail ? `\n${detail()}` : ''}`);
    }
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
  startServer, startCluster, CLUSTER_CLIENTS, CLIENTS, waitFor, calls, fencelockStat, subscribers, info, uniqueKey, stall,
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
