'use strict';

// The adapter layer: everything that differs between ioredis and node-redis lives here,
// so the lock logic (lease.js) is written once against this small interface:
//
//   adapter = { kind, db, open(purpose) -> Promise<connection> }
//   a cluster's adapter also has { cluster: true, nodeFor(key) -> Promise<"host:port">,
//     moved(slot, "host:port"), refresh() } and takes the node as open(purpose, node): fencelock
//     keeps its connections per node and follows -MOVED / -ASK itself (fencelock.js)
//   connection = {
//     send(args) -> Promise<reply>      (args: strings or Buffers; reply errors come back
//                                         as RedisReplyError / StaleTokenError)
//     subscribe(channel, onMessage), unsubscribe(channel)   (purpose 'subscriber' only)
//     destroy()                          drop the socket now; pending commands reject
//     close() -> Promise                 QUIT after pending replies
//     closed                             true once it can carry no more commands
//   }
//
// fencelock never sends on the application's own client: it opens connections from its
// options (duplicate()). Those for commands ('command', 'blocking') are configured so
// that nothing the client library does on its own can re-send a command or give up on
// one while the server still runs it: no command or socket timeout, no offline queue,
// no re-send of unanswered commands after a reconnect, and no reconnect at all (a
// broken connection is dropped and a new one opened for the next command). fencelock
// keeps its own reply deadline, derived from the server-side WAIT, and on it closes the
// connection, which makes the server forget a blocked acquire.

const { FencelockError, RedisReplyError, StaleTokenError } = require('./errors');
const { SlotMap, splitAddress, joinAddress } = require('./cluster');

function replyError(err) {
  const msg = String(err && err.message);
  const Cls = msg.startsWith('STALE ') ? StaleTokenError : RedisReplyError;
  return new Cls(msg, { cause: err });
}

function hasCtorNamed(err, name) {
  for (let p = err && Object.getPrototypeOf(err); p; p = Object.getPrototypeOf(p)) {
    if (p.constructor && p.constructor.name === name) return true;
  }
  return false;
}

// Neither library's errors matter to fencelock's callers once the command has failed;
// without a listener node-redis would crash the process on 'error' and ioredis would
// print each one.
function ignore() {}

function ioredisAdapter(client) {
  if (client.isCluster) return ioredisClusterAdapter(client);
  const db = Number((client.options && client.options.db) || 0);
  return {
    kind: 'ioredis',
    db,
    open: (purpose) => openIoredis((overrides) => client.duplicate(overrides), purpose),
  };
}

// An ioredis Cluster: connections to one node each, made from the cluster's
// `redisOptions` (and `natMap`), with the same overrides as for a single server.
function ioredisClusterAdapter(cluster) {
  const opts = cluster.options || {};
  const make = (address, overrides) => {
    const node = { ...target(address), db: 0 };
    // A duplicate of one of the cluster's own node connections has its options
    // (`redisOptions` and what ioredis adds); before it has any, the cluster's
    // `redisOptions` with the ioredis next to fencelock (a peer dependency).
    const nodes = typeof cluster.nodes === 'function' ? cluster.nodes('all') : [];
    if (nodes.length && typeof nodes[0].duplicate === 'function') return nodes[0].duplicate({ ...node, ...overrides });
    const Redis = require('ioredis');
    return new Redis({ ...(opts.redisOptions || {}), ...node, ...overrides });
  };
  const target = (address) => {
    if (typeof cluster.natMapper === 'function') {
      const m = cluster.natMapper(address);
      return { host: m.host, port: Number(m.port) };
    }
    return splitAddress(address);
  };
  const adapter = {
    kind: 'ioredis',
    cluster: true,
    db: 0,
    open(purpose, address) {
      if (typeof address !== 'string') throw new TypeError('fencelock: a cluster connection needs a node address');
      return openIoredis((overrides) => make(address, overrides), purpose);
    },
    nodeFor: (key) => slots.nodeFor(key),
    moved: (slot, address) => slots.moved(slot, address),
    refresh: () => slots.refresh(),
  };
  const slots = new SlotMap(() => {
    const out = [];
    const nodes = typeof cluster.nodes === 'function' ? cluster.nodes('master') : [];
    for (const n of nodes) out.push(joinAddress(n.options.host, n.options.port));
    for (const n of cluster.startupNodes || []) {
      const a = startupAddress(n);
      if (a) out.push(a);
    }
    return out;
  }, (address) => adapter.open('command', address));
  return adapter;
}

// ioredis startup nodes: a port, "host:port", a redis:// URL or { host, port }.
function startupAddress(n) {
  if (typeof n === 'number') return joinAddress('127.0.0.1', n);
  if (typeof n === 'string') {
    if (/^\d+$/.test(n)) return joinAddress('127.0.0.1', n);
    if (n.includes('//')) {
      try {
        const u = new URL(n);
        return joinAddress(u.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1', u.port || 6379);
      } catch {
        return null;
      }
    }
    return n.includes(':') ? n : joinAddress(n, 6379);
  }
  if (n && typeof n === 'object') return joinAddress(n.host || '127.0.0.1', n.port || 6379);
  return null;
}

async function openIoredis(make, purpose) {
  const subscriber = purpose === 'subscriber';
  const conn = make({
    lazyConnect: true,
    commandTimeout: undefined,
    socketTimeout: undefined,
    blockingTimeout: undefined,
    autoResendUnfulfilledCommands: false,
    enableAutoPipelining: false,
    reconnectOnError: null,
    stringNumbers: false,
    monitor: false,
    readOnly: false,
    // A subscriber may reconnect and resubscribe as the application's client would:
    // an event missed meanwhile is covered by the watchdog and the local deadline.
    ...(subscriber
      ? { autoResubscribe: true }
      : { retryStrategy: () => null, enableOfflineQueue: false, maxRetriesPerRequest: 0 }),
  });
  conn.on('error', ignore);
  const listeners = new Map();
  conn.on('message', (channel, message) => {
    const fn = listeners.get(channel);
    if (fn) fn(message);
  });
  try {
    await conn.connect();
  } catch (err) {
    conn.disconnect();
    throw err;
  }
  return {
    async send(args) {
      try {
        return await conn.call(...args);
      } catch (err) {
        throw err && err.name === 'ReplyError' ? replyError(err) : err;
      }
    },
    async subscribe(channel, onMessage) {
      listeners.set(channel, onMessage);
      await conn.subscribe(channel);
    },
    async unsubscribe(channel) {
      listeners.delete(channel);
      if (conn.status === 'ready') await conn.unsubscribe(channel);
    },
    destroy() {
      conn.disconnect();
    },
    async close() {
      if (conn.status === 'end') return;
      try {
        await conn.quit();
      } catch {
        conn.disconnect();
      }
    },
    get closed() {
      return subscriber ? conn.status === 'end' : conn.status !== 'ready';
    },
  };
}

function nodeRedisAdapter(client) {
  if (isNodeRedisCluster(client)) return nodeRedisClusterAdapter(client);
  const options = client.options || {};
  const db = Number(options.database || 0);
  return {
    kind: 'node-redis',
    db,
    open: (purpose) => openNodeRedis(client, purpose, null),
  };
}

function isNodeRedisCluster(client) {
  return client.masters !== undefined || typeof client.getSlotMaster === 'function' ||
    typeof client.nodeClient === 'function';
}

// A node-redis cluster (v4 or v5): connections to one node each, duplicated from one of
// the cluster's own node clients (so they have its defaults: TLS, credentials, RESP)
// with the node's address (through `nodeAddressMap`). The cluster must be connected.
function nodeRedisClusterAdapter(cluster) {
  const opts = cluster.options || {};
  const masterAddress = (m) => m.address || joinAddress(m.host, m.port);
  const template = async () => {
    let lastErr = null;
    for (const m of cluster.masters || []) {
      try {
        return await cluster.nodeClient(m);
      } catch (err) {
        lastErr = err;
      }
    }
    throw lastErr || new FencelockError('fencelock: the node-redis cluster knows no node yet: ' +
      'connect it first (await cluster.connect())');
  };
  const target = (address) => {
    const map = opts.nodeAddressMap;
    const m = typeof map === 'function' ? map(address) : (map && typeof map === 'object' ? map[address] : undefined);
    return m ? { host: m.host, port: Number(m.port) } : splitAddress(address);
  };
  const adapter = {
    kind: 'node-redis',
    cluster: true,
    db: 0,
    async open(purpose, address) {
      if (typeof address !== 'string') throw new TypeError('fencelock: a cluster connection needs a node address');
      return openNodeRedis(await template(), purpose, target(address));
    },
    nodeFor: (key) => slots.nodeFor(key),
    moved: (slot, address) => slots.moved(slot, address),
    refresh: () => slots.refresh(),
  };
  const slots = new SlotMap(() => {
    const out = (cluster.masters || []).map(masterAddress);
    for (const n of opts.rootNodes || []) {
      if (n && n.socket && n.socket.port) out.push(joinAddress(n.socket.host || '127.0.0.1', n.socket.port));
      else if (n && n.url) out.push(startupAddress(n.url));
    }
    return out.filter(Boolean);
  }, (address) => adapter.open('command', address));
  return adapter;
}

async function openNodeRedis(client, purpose, node) {
  const options = client.options || {};
  const subscriber = purpose === 'subscriber';
  const socket = { ...(options.socket || {}), socketTimeout: undefined };
  if (node) Object.assign(socket, { host: node.host, port: node.port, path: undefined });
  if (!subscriber) socket.reconnectStrategy = false;
  const conn = client.duplicate({
    socket,
    ...(node ? { url: undefined, database: undefined, readonly: false } : {}),
    disableOfflineQueue: !subscriber,
    pingInterval: undefined,
    commandOptions: undefined,
    legacyMode: false,
    clientSideCache: undefined,
  });
  conn.on('error', ignore);
  try {
    await conn.connect();
  } catch (err) {
    destroy(conn);
    throw err;
  }
  return {
    async send(args) {
      try {
        return await conn.sendCommand(args);
      } catch (err) {
        throw hasCtorNamed(err, 'ErrorReply') ? replyError(err) : err;
      }
    },
    async subscribe(channel, onMessage) {
      await conn.subscribe(channel, (message) => onMessage(message));
    },
    async unsubscribe(channel) {
      if (conn.isReady) await conn.unsubscribe(channel);
    },
    destroy() {
      destroy(conn);
    },
    async close() {
      if (!conn.isOpen) return;
      try {
        await (typeof conn.close === 'function' ? conn.close() : conn.quit());
      } catch {
        destroy(conn);
      }
    },
    get closed() {
      return subscriber ? !conn.isOpen : !conn.isReady;
    },
  };
}

function destroy(conn) {
  try {
    // v5 has destroy(); v4's disconnect() is the same immediate close.
    const p = typeof conn.destroy === 'function' ? conn.destroy() : conn.disconnect();
    if (p && typeof p.catch === 'function') p.catch(ignore);
  } catch {
    // already closed
  }
}

function adapterFor(client) {
  if (client === null || typeof client !== 'object') {
    throw new TypeError('fencelock: expected an ioredis or node-redis client, got ' +
      (client === null ? 'null' : typeof client));
  }
  if (typeof client.open === 'function' && typeof client.duplicate !== 'function') {
    return client; // an adapter written by the caller
  }
  if (client.isCluster === true) return ioredisAdapter(client);
  if (typeof client.call === 'function' && typeof client.duplicate === 'function' &&
      typeof client.status === 'string') {
    return ioredisAdapter(client);
  }
  if (isNodeRedisCluster(client)) return nodeRedisClusterAdapter(client);
  if (typeof client.sendCommand === 'function' && typeof client.duplicate === 'function' &&
      'isOpen' in client) {
    return nodeRedisAdapter(client);
  }
  throw new TypeError('fencelock: expected an ioredis or node-redis (redis v4/v5) client, ' +
    'or an adapter object with open()');
}

module.exports = {
  adapterFor, ioredisAdapter, nodeRedisAdapter, ioredisClusterAdapter, nodeRedisClusterAdapter, replyError,
};
