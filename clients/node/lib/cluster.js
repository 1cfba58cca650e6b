'use strict';

// Redis Cluster routing for fencelock's own connections: the hash slot of a key, a slot
// map of its own (CLUSTER SLOTS, updated by -MOVED), and the parsing of -MOVED / -ASK.
// The adapters use it to find the node that serves a key; fencelock.js follows the
// redirects. Nothing here sends on the application's client.

const { FencelockError } = require('./errors');

const SLOTS = 16384;

// CRC16-CCITT (XModem), as the cluster specification computes it.
const CRC_TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let j = 0; j < 8; j++) c = (c & 0x8000) ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

function crc16(buf) {
  let crc = 0;
  for (const b of buf) crc = ((crc << 8) & 0xffff) ^ CRC_TABLE[((crc >> 8) ^ b) & 0xff];
  return crc;
}

// The slot of a key: only the part inside the first non-empty {...} if there is one.
function keySlot(key) {
  const buf = Buffer.isBuffer(key) ? key : Buffer.from(String(key));
  const open = buf.indexOf(0x7b); // {
  if (open !== -1) {
    const close = buf.indexOf(0x7d, open + 1); // }
    if (close > open + 1) return crc16(buf.subarray(open + 1, close)) % SLOTS;
  }
  return crc16(buf) % SLOTS;
}

// `-MOVED 3999 127.0.0.1:6381` / `-ASK 3999 127.0.0.1:6381`, from any error's message:
// { ask, slot, address } or null. The server sends these instead of running the command.
function redirectOf(err) {
  const m = /^(MOVED|ASK) (\d+) (\S*):(\d+)\s*$/.exec(String(err && err.message));
  if (!m) return null;
  return { ask: m[1] === 'ASK', slot: Number(m[2]), host: m[3], port: Number(m[4]) };
}

// "host:port" (IPv6 hosts keep their colons: the port is after the last one).
function splitAddress(address) {
  const i = address.lastIndexOf(':');
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(address.slice(i + 1)) };
}

const joinAddress = (host, port) => `${host}:${port}`;

const str = (v) => (Buffer.isBuffer(v) ? v.toString() : String(v));

// The node of every slot, as the masters announce themselves ("host:port"). Filled from
// CLUSTER SLOTS on first use and whenever a slot is found unserved; a -MOVED updates
// its one slot (as the cluster clients themselves do).
class SlotMap {
  // seeds(): addresses to ask for CLUSTER SLOTS when the map knows none that answers;
  // open(address): a connection ({ send, destroy, close }) to that node.
  constructor(seeds, open) {
    this._seeds = seeds;
    this._open = open;
    this._slots = new Array(SLOTS).fill(null);
    this._refreshing = null;
  }

  async nodeFor(key) {
    const slot = keySlot(key);
    if (this._slots[slot] === null) await this.refresh();
    const node = this._slots[slot];
    if (node === null) throw new FencelockError(`no cluster node serves slot ${slot} (key "${key}")`);
    return node;
  }

  moved(slot, address) {
    this._slots[slot] = address;
  }

  refresh() {
    if (!this._refreshing) {
      this._refreshing = this._refresh().finally(() => { this._refreshing = null; });
    }
    return this._refreshing;
  }

  async _refresh() {
    const known = new Set(this._slots.filter((a) => a !== null));
    const candidates = [...new Set([...known, ...this._seeds()])];
    let lastErr = null;
    for (const address of candidates) {
      let conn;
      try {
        conn = await this._open(address);
        const reply = await conn.send(['CLUSTER', 'SLOTS']);
        const { host: seedHost } = splitAddress(address);
        const slots = new Array(SLOTS).fill(null);
        for (const range of reply || []) {
          const [start, end, master] = range;
          // An unknown endpoint is announced as '' or '?': the node we asked knows it as
          // the address we reached it at only when it is that node; keep its host.
          let host = str(master[0]);
          if (host === '' || host === '?') host = seedHost;
          const node = joinAddress(host, Number(master[1]));
          for (let s = Number(start); s <= Number(end); s++) slots[s] = node;
        }
        this._slots = slots;
        return;
      } catch (err) {
        lastErr = err;
      } finally {
        if (conn) conn.close().catch(() => conn.destroy());
      }
    }
    throw lastErr || new FencelockError('no cluster node to ask for CLUSTER SLOTS');
  }
}

module.exports = { SLOTS, keySlot, crc16, redirectOf, splitAddress, joinAddress, SlotMap };
