// ESM entry: the same objects as the CommonJS one (one copy of the code, so instanceof
// and error classes agree whichever way the package was loaded).
import cjs from './index.js';

export const {
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
  FencelockError,
  RedisReplyError,
  StaleTokenError,
  LockLostError,
  LockNotAcquiredError,
  ReplyTimeoutError,
} = cjs;
export default cjs;
