'use strict';

const MAX_TTL = 2 ** 40;
const MAX_LIMIT = 2 ** 31;

// performance.now() is monotonic: a wall-clock step on this machine must not stretch or
// shorten what fencelock believes is left of a lease.
const now = () => performance.now();

// Leases are measured from before the command was sent, so the estimate can only end
// early. The margin covers the two clocks ticking at slightly different rates (the
// same allowance Redlock makes: 1% of the ttl plus 2 ms).
const drift = (ttl) => Math.floor(ttl * 0.01) + 2;

// setTimeout fires at once for delays past 2^31-1 ms (about 24.8 days), and leases and
// waits may be far longer: wait in chunks. Unref'd, since a pending timer of fencelock's
// alone should not keep a process alive (its connections do while they are open).
const MAX_DELAY = 2 ** 31 - 1;
function timer(ms, fn) {
  const end = now() + ms;
  let handle;
  const arm = (delay) => {
    handle = setTimeout(() => {
      const left = end - now();
      if (left > 1) arm(left);
      else fn();
    }, Math.min(Math.max(0, Math.ceil(delay)), MAX_DELAY));
    handle.unref();
  };
  arm(ms);
  return { clear: () => clearTimeout(handle) };
}

function checkOptions(what, opts, known) {
  if (opts === undefined || opts === null) return {};
  if (typeof opts !== 'object') throw new TypeError(`${what}: options must be an object`);
  for (const k of Object.keys(opts)) {
    if (!known.includes(k)) {
      throw new TypeError(`${what}: unknown option "${k}" (known: ${known.join(', ')})`);
    }
  }
  return opts;
}

function checkKey(what, key) {
  if (typeof key !== 'string' || key.length === 0) {
    throw new TypeError(`${what}: key must be a non-empty string`);
  }
  return key;
}

function checkOwner(owner) {
  if (typeof owner !== 'string' || owner.length === 0) {
    throw new TypeError('owner must be a non-empty string');
  }
  return owner;
}

function checkInt(name, value, min, max, unit = ' (ms)') {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer from ${min} to ${max}${unit}, got ${String(value)}`);
  }
  return value;
}

const checkTtl = (name, ttl) => checkInt(name, ttl, 1, MAX_TTL);

// The server's WAIT 0 means "forever", which reads wrong in JavaScript; here `wait` is
// the longest time to wait: undefined or 0 try once, Infinity waits without limit.
function checkWait(wait) {
  if (wait === undefined || wait === Infinity) return wait;
  if (typeof wait !== 'number' || !Number.isInteger(wait) || wait < 0) {
    throw new RangeError('wait must be a non-negative integer of milliseconds or Infinity, got ' +
      String(wait));
  }
  return wait === 0 ? undefined : wait;
}

function checkSignal(signal) {
  if (signal === undefined) return undefined;
  if (!signal || typeof signal.aborted !== 'boolean' || typeof signal.addEventListener !== 'function') {
    throw new TypeError('signal must be an AbortSignal');
  }
  return signal;
}

function tokenArg(token) {
  if (typeof token === 'number' && Number.isSafeInteger(token) && token > 0) return String(token);
  if (typeof token === 'bigint' && token > 0n && token < 2n ** 63n) return token.toString();
  if (typeof token === 'string' && /^[1-9][0-9]{0,18}$/.test(token) && BigInt(token) < 2n ** 63n) return token;
  throw new RangeError(`token must be a positive integer (number, bigint or decimal string), got ${String(token)}`);
}

function stringArg(a) {
  if (typeof a === 'string' || Buffer.isBuffer(a)) return a;
  if (a instanceof Uint8Array) return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  if ((typeof a === 'number' && Number.isFinite(a)) || typeof a === 'bigint') return String(a);
  throw new TypeError(`command arguments must be strings, Buffers or finite numbers, got ${
    a === null ? 'null' : typeof a}`);
}

// Integer replies are numbers for both clients, strings with ioredis' stringNumbers,
// and nil is null.
function toInt(reply) {
  if (reply === null || reply === undefined) return null;
  if (typeof reply === 'number') return reply;
  if (typeof reply === 'bigint' || typeof reply === 'string') return Number(reply);
  if (Buffer.isBuffer(reply)) return Number(reply.toString());
  throw new TypeError(`fencelock: expected an integer reply, got ${typeof reply}`);
}

function toStr(v) {
  return Buffer.isBuffer(v) ? v.toString() : v;
}

// INFO replies are field/value pairs: a flat array under RESP2, a Map or an object under
// RESP3 depending on the client's type mapping. Nested holder entries too.
function pairs(reply) {
  if (reply === null || reply === undefined) return null;
  const out = {};
  const put = (k, v) => {
    k = toStr(k);
    out[k] = k === 'holders' ? (v || []).map(pairs) : (typeof v === 'number' || v === null ? v : toIntOrStr(k, v));
  };
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) put(reply[i], reply[i + 1]);
  } else if (reply instanceof Map) {
    for (const [k, v] of reply) put(k, v);
  } else if (typeof reply === 'object') {
    for (const k of Object.keys(reply)) put(k, reply[k]);
  } else {
    throw new TypeError(`fencelock: unexpected INFO reply ${typeof reply}`);
  }
  return out;
}

const INT_FIELDS = new Set(['token', 'ttl', 'holds', 'waiters', 'permits', 'limit', 'available']);
function toIntOrStr(k, v) {
  return INT_FIELDS.has(k) ? toInt(v) : toStr(v);
}

module.exports = {
  MAX_TTL, MAX_LIMIT, now, drift, timer, checkOptions, checkKey, checkOwner, checkInt, checkTtl,
  checkWait, checkSignal, tokenArg, stringArg, toInt, pairs,
};
