'use strict';

const { Fencelock, Fence, fenceCallArgs } = require('./lib/fencelock');
const { Lease, Lock, RWLock, ReadLock, WriteLock, Semaphore } = require('./lib/lease');
const { adapterFor, ioredisAdapter, nodeRedisAdapter } = require('./lib/adapters');
const errors = require('./lib/errors');

module.exports = {
  Fencelock,
  Fence,
  fenceCallArgs,
  Lease,
  Lock,
  RWLock,
  ReadLock,
  WriteLock,
  Semaphore,
  adapterFor,
  ioredisAdapter,
  nodeRedisAdapter,
  ...errors,
};
