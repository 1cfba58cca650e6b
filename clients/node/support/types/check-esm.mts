// The ESM entry's types are the same declarations.
import { Fencelock, Lock, ReplyTimeoutError } from 'fencelock';
import { Redis } from 'ioredis';

const fl = new Fencelock(new Redis());
const lock: Lock = fl.lock('k');
const e: ReplyTimeoutError | null = null;
void lock; void e;
