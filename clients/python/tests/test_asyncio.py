"""fencelock.asyncio against a real server: the same behaviour as the synchronous
classes, with holds per task."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio
from redis.exceptions import LockError, LockNotOwnedError

import fencelock.asyncio as fa
from conftest import keyspace


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def until(condition, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def lock_info(r, key):
    reply = await r.execute_command("LOCK.INFO", key)
    return {} if reply is None else {k.decode(): v for k, v in zip(reply[::2], reply[1::2])}


async def numsub(r, channel):
    return dict(await r.pubsub_numsub(channel))[channel.encode()]


@pytest.fixture
def client(server, r):  # r: a flushed server
    return lambda **kw: redis.asyncio.Redis(host="127.0.0.1", port=server.port, **kw)


def test_context_manager_tokens_and_fences(client):
    async def body():
        r = client()
        async with fa.Lock(r, "{a}:lock") as lock:
            assert lock.token > 0 and await lock.owned()
            assert (await lock_info(r, "{a}:lock"))["owner"] == lock.owner
            assert await lock.fenced("INCRBY", "{a}:n", 2) == 2
            assert await lock.check_fence() is True
            first = lock.token
        assert not await lock.locked()
        async with fa.Lock(r, "{a}:lock") as newer:
            assert newer.token > first
            await newer.fenced("INCRBY", "{a}:n", 1)
        with pytest.raises(fa.StaleTokenError):
            await fa.fenced(r, "{a}:lock:fence", first, "INCRBY", "{a}:n", 100)
        assert await r.get("{a}:n") == b"3"
        await r.aclose()

    run(body())


def test_wait_beyond_socket_timeout_is_one_command(server, client):
    async def body():
        r = client(socket_timeout=0.1, retry_on_timeout=True)
        holder, waiter = fa.Lock(r, "w"), fa.Lock(r, "w")
        await holder.acquire()
        started = time.monotonic()
        assert await waiter.acquire(timeout=0.4) is False
        assert time.monotonic() - started >= 0.4
        task = asyncio.create_task(waiter.acquire(timeout=5))
        await until(lambda: _waiters(r, "w", 1), what="the waiter queued")
        await holder.release()
        assert await task is True
        assert server.calls("LOCK.ACQUIRE") == 3
        await r.aclose()

    run(body())


async def _waiters(r, key, n):
    return (await lock_info(r, key)).get("waiters") == n


def test_tasks_sharing_a_lock_object_exclude_each_other(client):
    async def body():
        r = client()
        lock = fa.Lock(r, "crit")
        inside, most, tokens = 0, 0, []

        @lock
        async def critical(i):
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            tokens.append(lock.token)
            await asyncio.sleep(0)  # let the other tasks run while this one holds
            inside -= 1

        await asyncio.gather(*(critical(i) for i in range(8)))
        assert most == 1
        assert tokens == sorted(tokens) and len(set(tokens)) == 8
        async with lock:
            async with lock:  # re-entry in one task
                assert (await lock_info(r, "crit"))["holds"] == 2
        await r.aclose()

    run(body())


def test_lost_by_keeper_and_by_keyspace_event(client):
    async def body():
        r = client()
        told = []

        async def record(lock):
            told.append(lock)

        renewed = fa.Lock(r, "k1", timeout=0.3, auto_renew=True, on_lost=record)
        await renewed.acquire()
        await r.delete("k1")
        await asyncio.wait_for(renewed.lost.wait(), 5)

        watched = fa.Lock(r, "k2", timeout=60, watch_events=True, on_lost=told.append)
        await watched.acquire()
        await until(lambda: _subscribed(r, keyspace("k2")), what="the keeper's subscription")
        await r.pexpire("k2", 1)
        await asyncio.wait_for(watched.lost.wait(), 5)
        await until(lambda: _truthy(len(told) == 2), what="both callbacks")
        assert told == [renewed, watched]
        for lock in (renewed, watched):
            with pytest.raises(LockNotOwnedError):
                await lock.release()
        await r.aclose()

    run(body())


async def _subscribed(r, channel):
    return await numsub(r, channel) == 1


async def _truthy(value):
    return value


def test_keeper_renews_and_stops_on_release(server, client):
    async def body():
        r = client()
        lock = fa.Lock(r, "kept", timeout=0.3, auto_renew=True)
        await lock.acquire()
        await until(lambda: _truthy(server.calls("LOCK.EXTEND") >= 4), what="renewals")
        assert await lock.owned()
        keeper = lock._hold().keeper
        await lock.release()
        await until(lambda: _truthy(keeper.done()), what="the keeper task to end")
        assert not lock.lost.is_set()
        await r.aclose()

    run(body())


def test_redis_asyncio_lock_class_and_errors(client):
    async def body():
        r = client()
        lock = r.lock("cls", timeout=5, blocking_timeout=0.2, lock_class=fa.Lock)
        async with lock:
            assert await lock.locked()
            other = r.lock("cls", timeout=5, blocking_timeout=0.2, lock_class=fa.Lock)
            with pytest.raises(LockError, match="Unable to acquire"):
                async with other:
                    pass
            assert await lock.extend(5) and await lock.reacquire()
        with pytest.raises(LockError, match="unlocked"):
            await lock.release()
        with pytest.raises(TypeError, match="coroutine"):
            fa.Lock(r, "x")(lambda: None)
        with pytest.raises(TypeError, match="asyncio"):
            fa.Lock(redis.Redis(), "x")
        assert "token=None" in repr(lock)
        await r.aclose()

    run(body())


def test_acquire_inside_wait_for_is_released_by_the_caller(client):
    async def body():
        r = client()
        lock = fa.Lock(r, "wf")
        assert await asyncio.wait_for(lock.acquire(), 5)
        assert lock.token > 0 and await lock.owned()
        await lock.release()
        assert not await lock.locked()
        await r.aclose()

    run(body())


def test_rwlock_and_semaphore(client):
    async def body():
        r = client()
        a, b = fa.RWLock(r, "rw"), fa.RWLock(r, "rw")
        async with a.read, b.read:
            assert not await a.write.acquire(blocking=False)
        async with a.write:
            async with a.read:  # downgrade under one owner
                assert await a.read.owned()
            assert not await b.read.acquire(blocking=False)
        s1, s2 = fa.Semaphore(r, "sem", 1), fa.Semaphore(r, "sem", 1)
        async with s1:
            assert await s2.locked() and not await s2.acquire(blocking=False)
        assert await s2.acquire(blocking=False)
        await s2.release()
        await r.aclose()

    run(body())


def test_a_stalled_server_fails_the_acquire_without_an_orphan_grant(fresh_server):
    """As the synchronous test of the same name: no re-send, and no grant left behind."""
    r = fresh_server.client()
    r.execute_command("LOCK.ACQUIRE", "stall", "holder", 10000)
    holder_conn = r.connection_pool.get_connection("LOCK.RELEASE")

    async def body():
        w = redis.asyncio.Redis(host="127.0.0.1", port=fresh_server.port)
        await w.ping()  # a warm pool
        clients_before = r.info("clients")["connected_clients"]
        fresh_server.pause()
        try:
            holder_conn.send_command("LOCK.RELEASE", "stall", "holder")  # runs first on resume
            with pytest.raises(redis.TimeoutError):
                await fa.Lock(w, "stall", wait_margin=0.3).acquire(timeout=0.2)
        finally:
            fresh_server.resume()
        assert holder_conn.read_response() == 1
        await until(lambda: _truthy(r.info("clients")["connected_clients"] == clients_before - 1), what="hang-up seen")
        await w.aclose()

    run(body())
    assert r.execute_command("LOCK.INFO", "stall") is None
    assert fresh_server.calls("LOCK.ACQUIRE") == 2
    r.connection_pool.release(holder_conn)
    r.close()


def test_state_is_readable_outside_the_loop():
    lock = fa.Lock(redis.asyncio.Redis(), "outside")
    assert lock.token is None and lock.owner is None and "token=None" in repr(lock)
