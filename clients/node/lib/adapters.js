'use strict';

// The adapter layer: everything that differs between ioredis and node-redis lives here,
// so the lock logic (lease.js) is written once against this small interface:
//
//   adapter = { kind, db, open(purpose) -> Promise<connection> }
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

const { RedisReplyError, StaleTokenError } = require('./errors');

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
  if (client.isCluster) {
    throw new TypeError('fencelock: ioredis Cluster clients are not supported; pass a Redis ' +
      'client connected to the node that serves the lock keys');
  }
  const db = Number((client.options && client.options.db) || 0);
  return {
    kind: 'ioredis',
    db,
    async open(purpose) {
      const subscriber = purpose === 'subscriber';
      const conn = client.duplicate({
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
      const wrapper = {
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
      return wrapper;
    },
  };
}

function nodeRedisAdapter(client) {
  const options = client.options || {};
  const db = Number(options.database || 0);
  return {
    kind: 'node-redis',
    db,
    async open(purpose) {
      const subscriber = purpose === 'subscriber';
      const socket = { ...(options.socket || {}), socketTimeout: undefined };
      if (!subscriber) socket.reconnectStrategy = false;
      const conn = client.duplicate({
        socket,
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
  if (client.masters !== undefined || typeof client.getSlotMaster === 'function' ||
      typeof client.nodeClient === 'function') {
    throw new TypeError('fencelock: node-redis cluster clients are not supported; pass a ' +
      'client connected to the node that serves the lock keys');
  }
  if (typeof client.sendCommand === 'function' && typeof client.duplicate === 'function' &&
      'isOpen' in client) {
    return nodeRedisAdapter(client);
  }
  throw new TypeError('fencelock: expected an ioredis or node-redis (redis v4/v5) client, ' +
    'or an adapter object with open()');
}

module.exports = { adapterFor, ioredisAdapter, nodeRedisAdapter, replyError };
