// Type declarations for fencelock (hand-written; the package is plain JavaScript).
/// <reference types="node" />

import { EventEmitter } from 'node:events';

/**
 * An ioredis `Redis` or `Cluster`, a node-redis (`redis` v4/v5) client or cluster
 * (`createCluster`, connected), or an {@link Adapter}.
 */
export type SupportedClient = object;

export interface FencelockOptions {
  /** Lease of locks made by this instance, in ms (1 to 2^40). Default 30000. */
  ttl?: number;
  /** How often the watchdog extends a held lease, in ms. Default: a third of the ttl. */
  renewInterval?: number;
  /** Extend held leases automatically. Default true. */
  watchdog?: boolean;
  /**
   * How long a reply may take beyond what the server is asked to wait, in ms. A blocking
   * acquire gives up (and closes its connection) after `wait + replyTimeout`; any other
   * command after `replyTimeout`. Default 10000.
   */
  replyTimeout?: number;
  /**
   * Subscribe to each held lock's keyspace events to learn of a loss at once.
   * `'auto'` (default) subscribes when `notify-keyspace-events` has `K` and `d` (or `A`),
   * or when that cannot be read.
   */
  keyspaceEvents?: boolean | 'auto';
  /** Idle connections kept for blocking acquires. Default 2. */
  maxIdleConnections?: number;
}

export interface LockOptions {
  /** Lease in ms (1 to 2^40). Default: the Fencelock's ttl. */
  ttl?: number;
  /** Watchdog period in ms, shorter than the ttl. Default: ttl / 3. */
  renewInterval?: number;
  /** Default: the Fencelock's setting. */
  watchdog?: boolean;
  /** The holder's identity on the server. Default: `host:pid:uuid`, unique per object. */
  owner?: string;
  /** Called (like the 'lost' event) when a held lease is lost. */
  onLockLost?: (err: LockLostError) => void;
}

export interface AcquireOptions {
  /**
   * Longest time to wait, in ms, blocking in the server (`WAIT`). Undefined or 0: one
   * try. `Infinity`: no limit (the server's `WAIT 0`).
   */
  wait?: number;
  /** Cancels a waiting acquire (the server is told with CLIENT UNBLOCK). */
  signal?: AbortSignal;
}

export interface SemaphoreOptions extends LockOptions {
  /** Permits in the semaphore (1 to 2^31); every acquire states it. */
  limit: number;
  /** Permits this holder takes (1 to limit). Default 1. */
  permits?: number;
}

export type LeaseKind = 'lock' | 'read' | 'write' | 'semaphore';

export type LostReason =
  | 'extend-refused'
  | 'release-refused'
  | 'event'
  | 'expired'
  | 'deadline'
  | 'closed';

/** What Lock, ReadLock, WriteLock and Semaphore have in common: one kind of hold. */
export declare class Lease extends EventEmitter {
  readonly kind: LeaseKind;
  readonly key: string;
  readonly owner: string;
  readonly ttl: number;
  /** The watchdog's period in ms. */
  readonly renewInterval: number;
  /** Hold count of this object (reentrant acquires add one each). */
  readonly holds: number;
  readonly held: boolean;
  /** The fencing token of the current (or last) hold; null before the first. */
  readonly token: number | null;
  /**
   * The current (or last) hold's signal: aborted, with a LockLostError as its reason,
   * when that hold is lost. A release does not abort it. Null before the first acquire.
   */
  readonly signal: AbortSignal | null;
  /** Why the last hold was lost, or null. */
  readonly lost: LockLostError | null;
  /** Ms of lease left by this process's clock (0 when not held). */
  readonly remaining: number;

  /** The token when granted, null when not (busy, or the wait ran out). */
  acquire(options?: AcquireOptions): Promise<number | null>;
  /** Gives back one hold. False when nothing was held (or it had been lost). */
  release(): Promise<boolean>;
  /** Resets the lease now (default: the ttl). False when not held; a refusal by the server is reported as a loss. */
  extend(ttl?: number): Promise<boolean>;
  /** The server's INFO for the key, as an object; null when free with no waiters. */
  info(): Promise<Record<string, unknown> | null>;
  /** Acquire (LockNotAcquiredError if not granted), run `fn`, release; `fn`'s result. */
  using<T>(fn: (signal: AbortSignal, lease: this) => T | Promise<T>): Promise<T>;
  using<T>(options: AcquireOptions, fn: (signal: AbortSignal, lease: this) => T | Promise<T>): Promise<T>;
  /** FENCE.CALL with this hold's token; throws if not held (the LockLostError if lost). */
  fenceCall(fenceKey: string, command: string, ...args: Array<string | number | bigint | Buffer>): Promise<unknown>;
  /** FENCE.CHECK with this hold's token: true, or StaleTokenError. */
  fenceCheck(fenceKey: string): Promise<boolean>;
  /** Releases one hold if any (for `await using`). */
  [Symbol.asyncDispose](): Promise<void>;

  on(event: 'lost', listener: (err: LockLostError) => void): this;
  once(event: 'lost', listener: (err: LockLostError) => void): this;
  off(event: 'lost', listener: (err: LockLostError) => void): this;
  on(event: string | symbol, listener: (...args: any[]) => void): this;
  once(event: string | symbol, listener: (...args: any[]) => void): this;
  off(event: string | symbol, listener: (...args: any[]) => void): this;
}

export declare class Lock extends Lease {
  readonly kind: 'lock';
  constructor(fencelock: Fencelock, key: string, options?: LockOptions);
}

export declare class ReadLock extends Lease {
  readonly kind: 'read';
  readonly mode: 'read';
}

export declare class WriteLock extends Lease {
  readonly kind: 'write';
  readonly mode: 'write';
}

/** A read-write lock: one owner, two modes, one watchdog (RWLOCK.EXTEND covers both). */
export declare class RWLock {
  constructor(fencelock: Fencelock, key: string, options?: LockOptions);
  readonly key: string;
  readonly owner: string;
  readonly ttl: number;
  readonly renewInterval: number;
  readonly read: ReadLock;
  readonly write: WriteLock;
  info(): Promise<Record<string, unknown> | null>;
}

export declare class Semaphore extends Lease {
  readonly kind: 'semaphore';
  readonly limit: number;
  readonly permits: number;
  constructor(fencelock: Fencelock, key: string, options: SemaphoreOptions);
}

/** The resource side of fencing: FENCE.* on one fence key. */
export declare class Fence {
  readonly key: string;
  next(): Promise<number>;
  current(): Promise<number>;
  /** True, or StaleTokenError when a newer token was recorded. */
  check(token: number | bigint | string): Promise<boolean>;
  /** The command's own reply, or StaleTokenError (and nothing ran). */
  call(token: number | bigint | string, command: string,
    ...args: Array<string | number | bigint | Buffer>): Promise<unknown>;
}

export declare class Fencelock {
  constructor(client: SupportedClient, options?: FencelockOptions);
  readonly ttl: number;
  readonly watchdog: boolean;
  readonly replyTimeout: number;
  readonly keyspaceEvents: boolean | 'auto';
  readonly maxIdleConnections: number;
  /** 'ioredis', 'node-redis', or a custom adapter's kind. */
  readonly clientKind: string;
  lock(key: string, options?: LockOptions): Lock;
  rwlock(key: string, options?: LockOptions): RWLock;
  semaphore(key: string, options: SemaphoreOptions): Semaphore;
  fence(key: string): Fence;
  /** A held Lock, or LockNotAcquiredError: `await using lock = await fl.acquire(key)`. */
  acquire(key: string, options?: LockOptions & AcquireOptions): Promise<Lock>;
  using<T>(key: string, fn: (signal: AbortSignal, lock: Lock) => T | Promise<T>): Promise<T>;
  using<T>(key: string, options: LockOptions & AcquireOptions,
    fn: (signal: AbortSignal, lock: Lock) => T | Promise<T>): Promise<T>;
  /** Stops all watchdogs (held leases: lost, reason 'closed') and closes fencelock's connections. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** FENCE.CALL's arguments, to send yourself (in MULTI, a pipeline). */
export declare function fenceCallArgs(fenceKey: string, token: number | bigint | string, command: string,
  ...args: Array<string | number | bigint | Buffer>): Array<string | Buffer>;

/** A connection fencelock owns; see the README's "Adapters". */
export interface AdapterConnection {
  send(args: Array<string | Buffer>): Promise<unknown>;
  subscribe(channel: string, onMessage: (message: string) => void): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  destroy(): void;
  close(): Promise<void>;
  readonly closed: boolean;
}

export interface Adapter {
  readonly kind: string;
  /** The database number, for keyspace event channels. */
  readonly db: number;
  /**
   * A connection of its own. For a cluster adapter (one with `nodeFor`), `node` is the
   * `"host:port"` of the node to connect to, as the cluster announces it.
   */
  open(purpose: 'command' | 'blocking' | 'subscriber', node?: string): Promise<AdapterConnection>;
  /** Cluster adapters: true. */
  readonly cluster?: boolean;
  /** Cluster adapters: the `"host:port"` of the master that serves `key`'s hash slot. */
  nodeFor?(key: string): Promise<string>;
  /** Cluster adapters: a `-MOVED` said that `slot` is served by `node` now. */
  moved?(slot: number, node: string): void;
  /** Cluster adapters: read the slot map again (after a node could not be reached). */
  refresh?(): Promise<void>;
}

export declare function adapterFor(client: SupportedClient): Adapter;
export declare function ioredisAdapter(client: object): Adapter;
export declare function nodeRedisAdapter(client: object): Adapter;

export declare class FencelockError extends Error {}
/** The server answered an error; the client's own error is `cause`. */
export declare class RedisReplyError extends FencelockError {}
export declare class StaleTokenError extends RedisReplyError {
  readonly token: number | null;
  readonly highest: number | null;
}
export declare class LockLostError extends FencelockError {
  readonly key: string;
  readonly owner: string;
  readonly kind: LeaseKind;
  readonly token: number | null;
  readonly reason: LostReason;
  /** The keyspace event that revealed the loss (reason 'event'). */
  readonly event: string | null;
}
export declare class LockNotAcquiredError extends FencelockError {
  readonly key: string;
  readonly kind: LeaseKind;
}
export declare class ReplyTimeoutError extends FencelockError {
  readonly command: string;
  readonly timeout: number;
}
