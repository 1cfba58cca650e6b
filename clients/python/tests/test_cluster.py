"""On a one-node Redis Cluster: every request, the blocking acquire on its own
connection included, goes to the node that owns the key's slot."""

from __future__ import annotations

import asyncio
import threading

import pytest
import redis.asyncio.cluster
from redis.exceptions import ClusterCrossSlotError, LockNotOwnedError, ResponseError

import fencelock
import fencelock.asyncio as fa
from conftest import info, keyspace, subscribers, wait_until


def test_lock_wait_and_fences_on_a_cluster(cluster_server, rc):
    holder, waiter = fencelock.Lock(rc, "{q}:lock"), fencelock.Lock(rc, "{q}:lock")
    holder.acquire()
    holder.fenced("LPUSH", "{q}:jobs", "a")
    got = []

    def wait() -> None:
        with waiter:
            got.append(waiter.token)
            waiter.fenced("LPUSH", "{q}:jobs", "b")

    t = threading.Thread(target=wait)
    t.start()
    wait_until(lambda: info(rc, "LOCK.INFO", "{q}:lock")["waiters"] == 1, what="the waiter queued")
    old = holder.token
    holder.release()
    t.join(5)
    assert got and got[0] > old
    with pytest.raises(fencelock.StaleTokenError):
        fencelock.fenced(rc, "{q}:lock:fence", old, "LPUSH", "{q}:jobs", "late")
    assert rc.lrange("{q}:jobs", 0, -1) == [b"b", b"a"]
    # The fence and the command's keys must share a slot.
    with fencelock.Lock(rc, "{q}:lock") as lock:
        with pytest.raises((ClusterCrossSlotError, ResponseError), match="(?i)slot"):
            lock.fenced("SET", "elsewhere", 1)


def test_rwlock_semaphore_and_events_on_a_cluster(cluster_server, rc):
    rw = fencelock.RWLock(rc, "{r}:rw")
    with rw.write, rw.read:
        assert rw.read.owned() and rw.write.owned()
    with fencelock.Semaphore(rc, "{s}:sem", 2, permits=2) as sem:
        assert sem.owned() and not fencelock.Semaphore(rc, "{s}:sem", 2).acquire(blocking=False)
    lock = fencelock.Lock(rc, "{e}:lock", timeout=60, watch_events=True)
    lock.acquire()
    node = cluster_server.client()
    wait_until(lambda: subscribers(node, keyspace("{e}:lock")) == 1, what="subscribed on the key's node")
    rc.delete("{e}:lock")
    assert lock.lost.wait(5)
    with pytest.raises(LockNotOwnedError):
        lock.release()
    node.close()


def test_asyncio_on_a_cluster(cluster_server, rc):
    async def body():
        r = redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=cluster_server.port)
        holder, waiter = fa.Lock(r, "{aq}:lock"), fa.Lock(r, "{aq}:lock", watch_events=True, timeout=60)
        await holder.acquire()
        task = asyncio.create_task(waiter.acquire(timeout=5))
        while (await r.execute_command("LOCK.INFO", "{aq}:lock"))[-1] != 1:  # waiters
            await asyncio.sleep(0.005)
        await holder.release()
        assert await asyncio.wait_for(task, 5)
        assert await waiter.fenced("SET", "{aq}:data", "x") == b"OK"
        node = cluster_server.client()
        while subscribers(node, keyspace("{aq}:lock")) != 1:
            await asyncio.sleep(0.005)
        await r.delete("{aq}:lock")
        await asyncio.wait_for(waiter.lost.wait(), 5)
        node.close()
        await r.aclose()

    asyncio.run(asyncio.wait_for(body(), 30))
