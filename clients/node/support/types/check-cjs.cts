// Compiled by test/types.test.js (tsc --strict, no emit): the declarations accept what
// the README shows and refuse misuse (each @ts-expect-error must meet an error).
import Redis from 'ioredis';
import { createClient, createCluster } from 'redis';
import {
  Fencelock, Lock, LockLostError, StaleTokenError, LockNotAcquiredError, fenceCallArgs,
} from 'fencelock';

async function main(): Promise<void> {
  const fl = new Fencelock(new Redis(), { ttl: 30000, keyspaceEvents: 'auto' });
  const fl2 = new Fencelock(createClient(), { watchdog: false });
  const onCluster = new Fencelock(new Redis.Cluster([{ host: '127.0.0.1', port: 7000 }]));
  const onNodeCluster = new Fencelock(await createCluster({ rootNodes: [{ url: 'redis://127.0.0.1:7000' }] }).connect());
  await onCluster.close();
  await onNodeCluster.close();

  const lock: Lock = fl.lock('orders:lock', { onLockLost: (err) => console.log(err.reason) });
  const token: number | null = await lock.acquire({ wait: 5000, signal: AbortSignal.timeout(6000) });
  if (token !== null) {
    const signal: AbortSignal | null = lock.signal;
    await lock.fenceCall('{o}:fence', 'SET', '{o}:x', 1);
    await lock.release();
    console.log(signal?.aborted);
  }
  lock.on('lost', (err) => { const r: string = err.reason; console.log(r); });

  const n: number = await fl.using('k', { wait: 1000, ttl: 5000 }, async (signal, l) => {
    signal.throwIfAborted();
    return l.token ?? 0;
  });
  const held = await fl2.acquire('k2');
  await held[Symbol.asyncDispose]();

  const rw = fl.rwlock('rw');
  await rw.read.using(async (s) => s.aborted);
  await rw.write.acquire();
  const sem = fl.semaphore('s', { limit: 3, permits: 2 });
  await sem.acquire({ wait: Infinity });
  const fence = fl.fence('{q}:fence');
  const t: number = await fence.next();
  await fence.call(t, 'LPUSH', '{q}:jobs', 'job-1');
  await fence.check(BigInt(t));
  const args: Array<string | Buffer> = fenceCallArgs('{q}:fence', t, 'INCRBY', '{q}:n', 5);

  try { await fence.check(1); } catch (e) {
    if (e instanceof StaleTokenError) console.log(e.highest);
    if (e instanceof LockLostError || e instanceof LockNotAcquiredError) console.log(e.key);
  }

  // @ts-expect-error: a semaphore needs its limit
  fl.semaphore('s', {});
  // @ts-expect-error: wait is a number of ms
  await lock.acquire({ wait: '5s' });
  // @ts-expect-error: the lease options are not acquire options
  await lock.acquire({ ttl: 5 });
  // @ts-expect-error: tokens are numbers
  const wrong: string = await fence.next();
  console.log(n, args, wrong);
  await fl.close();
}
void main;
