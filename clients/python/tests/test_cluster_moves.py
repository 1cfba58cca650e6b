"""On a cluster of three masters: locks on every master, and slots that move while a
lock on them is held and a client waits for it. The package sends acquires, releases
and FENCE.CALL once, on a connection of its own (outside redis-py's retry loop), so it
must follow -MOVED and -ASK for them itself: the server answers those without running
the command, and a waiter it redirects is queued nowhere."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Dict

import pytest
import redis.asyncio.cluster
from redis.cluster import RedisCluster
from redis.crc import key_slot

import fencelock
import fencelock.asyncio as fa
from conftest import Cluster, info, wait_until


def client(c3: Cluster) -> RedisCluster:
    return RedisCluster(host="127.0.0.1", port=c3.nodes[0].port)


def aclient(c3: Cluster) -> redis.asyncio.cluster.RedisCluster:
    return redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=c3.nodes[0].port)


def other_than(*nodes: int) -> int:
    return next(n for n in range(3) if n not in nodes)


def waiters(c3: Cluster, node: int, name: str) -> int:
    return int(info(c3.conns[node], "LOCK.INFO", name).get("waiters", 0))


async def until(condition: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.005)


def move(c3: Cluster, slot: int, src: int, dst: int) -> None:
    c3.begin_migration(slot, src, dst)
    c3.move_keys(slot, src, dst)
    c3.end_migration(slot, src, dst)


def reset_counts(c3: Cluster) -> None:
    for c in c3.conns:
        c.config_resetstat()


def test_locks_on_every_master(c3):
    rc = client(c3)
    for node in range(3):
        tag = c3.key_on(node, "each")
        name, data = f"{tag}:lock", f"{tag}:n"
        # The waiter is not per thread, so that this thread may use what it got in one.
        holder, waiter = fencelock.Lock(rc, name, timeout=60), fencelock.Lock(rc, name, timeout=60, thread_local=False)
        assert holder.acquire(blocking=False)
        first = holder.token
        assert info(c3.conns[node], "LOCK.INFO", name)["token"] == first, "the lock is at the slot's owner"
        assert holder.extend(10) and holder.owned()
        assert holder.fenced("INCR", data) == 1
        # A blocking acquire on that node's pool, handed the lock on release.
        got: Dict[str, Any] = {}
        t = threading.Thread(target=lambda: got.update(ok=waiter.acquire(timeout=5)))
        t.start()
        wait_until(lambda: waiters(c3, node, name) == 1, what=f"a waiter queued on node {node}")
        holder.release()
        t.join(5)
        assert got["ok"] and waiter.token > first, "tokens per key rise"
        assert not holder.acquire(blocking=False), "the waiter holds it now"
        assert waiter.fenced("INCR", data) == 2
        with pytest.raises(fencelock.StaleTokenError):
            fencelock.fenced(rc, f"{name}:fence", first, "INCR", data)
        assert c3.conns[node].get(data) == b"2", "the stale write was refused at the key's node"
        waiter.release()
        assert not holder.locked() and info(c3.conns[node], "LOCK.INFO", name) == {}

    # An RWLock and a Semaphore, on a master each.
    rw_name = f"{c3.key_on(1, 'rw')}:rw"
    rw = fencelock.RWLock(rc, rw_name, timeout=60)
    with rw.write, rw.read:
        assert rw.read.owned() and rw.write.owned()
        assert info(c3.conns[1], "RWLOCK.INFO", rw_name)["mode"] == b"write"
    sem_name = f"{c3.key_on(2, 'sem')}:sem"
    with fencelock.Semaphore(rc, sem_name, 2, timeout=60) as one, fencelock.Semaphore(rc, sem_name, 2, timeout=60) as two:
        assert two.token > one.token and not fencelock.Semaphore(rc, sem_name, 2).acquire(blocking=False)
        assert info(c3.conns[2], "SEM.INFO", sem_name)["available"] == 0
    rc.close()


def test_locks_on_every_master_asyncio(c3):
    async def body() -> None:
        rc = aclient(c3)
        for node in range(3):
            tag = c3.key_on(node, "aeach")
            name, data = f"{tag}:lock", f"{tag}:n"
            holder, waiter = fa.Lock(rc, name, timeout=60), fa.Lock(rc, name, timeout=60)
            assert await holder.acquire(blocking=False)
            first = holder.token
            assert info(c3.conns[node], "LOCK.INFO", name)["token"] == first, "the lock is at the slot's owner"
            assert await holder.extend(10) and await holder.owned()
            assert await holder.fenced("INCR", data) == 1
            # A blocking acquire on that node's connections, handed the lock on release.
            task = asyncio.create_task(waiter.acquire(timeout=5))
            await until(lambda: waiters(c3, node, name) == 1, what=f"a waiter queued on node {node}")
            await holder.release()
            assert await asyncio.wait_for(task, 5) and waiter.token > first, "tokens per key rise"
            assert await waiter.fenced("INCR", data) == 2
            with pytest.raises(fencelock.StaleTokenError):
                await fa.fenced(rc, f"{name}:fence", first, "INCR", data)
            assert c3.conns[node].get(data) == b"2", "the stale write was refused at the key's node"
            await waiter.release()
            assert info(c3.conns[node], "LOCK.INFO", name) == {}
        sem_name = f"{c3.key_on(0, 'asem')}:sem"
        async with fa.Semaphore(rc, sem_name, 1, timeout=60) as sem:
            assert info(c3.conns[0], "SEM.INFO", sem_name)["available"] == 0 and sem.token
        rw_name = f"{c3.key_on(2, 'arw')}:rw"
        async with fa.RWLock(rc, rw_name, timeout=60).read:
            assert info(c3.conns[2], "RWLOCK.INFO", rw_name)["mode"] == b"read"
        await rc.aclose()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_waiter_follows_its_lock_when_the_slot_moves(c3):
    """The holder keeps the lock through the move; the waiter blocked at the old owner
    is answered -MOVED once the move is complete, and the package sends its acquire
    again at the new owner (once there), where the holder's release hands it over."""
    name = "{moving}:lock"
    slot = key_slot(name.encode())
    src = c3.owner(slot)
    dst, third = other_than(src), other_than(src, other_than(src))
    # Two clients: the holder's learns of the move only from its own requests.
    holder_rc, waiter_rc = client(c3), client(c3)
    holder = fencelock.Lock(holder_rc, name, timeout=60)
    waiter = fencelock.Lock(waiter_rc, name, timeout=60, thread_local=False)
    assert holder.acquire()
    held = holder.token
    reset_counts(c3)
    got: Dict[str, Any] = {}

    def wait() -> None:
        try:
            got["ok"] = waiter.acquire(timeout=10)
        except Exception as e:  # shown by the assertion below
            got["error"] = e

    t = threading.Thread(target=wait)
    t.start()
    wait_until(lambda: waiters(c3, src, name) == 1, what="the waiter queued at the old owner")

    c3.begin_migration(slot, src, dst)
    assert c3.move_keys(slot, src, dst) == 1
    # Mid-move the key is at the importing node: the extend follows -ASK.
    assert holder.extend(30)
    c3.end_migration(slot, src, dst)
    wait_until(lambda: waiters(c3, dst, name) == 1 or not t.is_alive(), what="the waiter queued at the new owner")
    assert "error" not in got, f"the waiter's acquire failed: {got.get('error')!r}"
    assert t.is_alive() and waiters(c3, dst, name) == 1
    assert info(c3.conns[dst], "LOCK.INFO", name)["token"] == held, "the holder kept the lock at the new owner"
    assert c3.keys_in(src, slot) == [], "nothing of it at the old owner"

    # The holder's client still sends to the old owner: its release follows -MOVED.
    holder.release()
    t.join(5)
    assert got == {"ok": True} and waiter.token > held
    assert waiter.fenced("SET", "{moving}:data", "new") == b"OK"
    with pytest.raises(fencelock.StaleTokenError):
        fencelock.fenced(holder_rc, f"{name}:fence", held, "SET", "{moving}:data", "old")
    # The acquire went once to each node: the old owner queued it and then refused it,
    # the new owner granted it; the release was refused once and ran once.
    assert [c3.calls(n, "LOCK.ACQUIRE") for n in (src, dst, third)] == [
        {"calls": 1, "rejected_calls": 0}, {"calls": 1, "rejected_calls": 0}, {"calls": 0, "rejected_calls": 0}]
    assert [c3.calls(n, "LOCK.RELEASE") for n in (src, dst, third)] == [
        {"calls": 0, "rejected_calls": 1}, {"calls": 1, "rejected_calls": 0}, {"calls": 0, "rejected_calls": 0}]
    waiter.release()
    holder_rc.close()
    waiter_rc.close()


def test_a_waiter_follows_its_lock_when_the_slot_moves_asyncio(c3):
    async def body() -> None:
        name = "{amoving}:lock"
        slot = key_slot(name.encode())
        src = c3.owner(slot)
        dst, third = other_than(src), other_than(src, other_than(src))
        holder_rc, waiter_rc = aclient(c3), aclient(c3)
        holder, waiter = fa.Lock(holder_rc, name, timeout=60), fa.Lock(waiter_rc, name, timeout=60)
        assert await holder.acquire()
        held = holder.token
        reset_counts(c3)
        task = asyncio.create_task(waiter.acquire(timeout=10))
        await until(lambda: waiters(c3, src, name) == 1, what="the waiter queued at the old owner")

        c3.begin_migration(slot, src, dst)
        assert c3.move_keys(slot, src, dst) == 1
        assert await holder.extend(30)  # through -ASK
        c3.end_migration(slot, src, dst)
        await until(lambda: waiters(c3, dst, name) == 1 or task.done(), what="the waiter queued at the new owner")
        assert not task.done(), f"the waiter's acquire ended: {task.exception() or task.result()!r}"
        assert info(c3.conns[dst], "LOCK.INFO", name)["token"] == held, "the holder kept the lock at the new owner"

        # (The sync test releases through -MOVED; here an extend, through redis-py,
        # meets it first and the release goes straight to the new owner.)
        assert await holder.extend(45, replace_ttl=True)  # through -MOVED
        assert info(c3.conns[dst], "LOCK.INFO", name)["ttl"] > 40_000, "extended at the new owner"
        await holder.release()
        assert await asyncio.wait_for(task, 5) and waiter.token > held
        assert await waiter.fenced("SET", "{amoving}:data", "new") == b"OK"
        with pytest.raises(fencelock.StaleTokenError):
            await fa.fenced(holder_rc, f"{name}:fence", held, "SET", "{amoving}:data", "old")
        assert [c3.calls(n, "LOCK.ACQUIRE") for n in (src, dst, third)] == [
            {"calls": 1, "rejected_calls": 0}, {"calls": 1, "rejected_calls": 0}, {"calls": 0, "rejected_calls": 0}]
        assert c3.calls(src, "LOCK.EXTEND")["rejected_calls"] == 2  # -ASK mid-move, -MOVED after
        assert c3.calls(dst, "LOCK.EXTEND") == {"calls": 2, "rejected_calls": 0}
        assert [c3.calls(n, "LOCK.RELEASE") for n in (src, dst, third)] == [
            {"calls": 0, "rejected_calls": 0}, {"calls": 1, "rejected_calls": 0}, {"calls": 0, "rejected_calls": 0}]
        await waiter.release()
        await holder_rc.aclose()
        await waiter_rc.aclose()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_fenced_and_release_follow_ask_during_a_move(c3):
    """Mid-move (slot MIGRATING/IMPORTING), once the keys have left, the old owner
    answers -ASK: FENCE.CALL and the release run once, at the importing node."""
    name, data = "{fz}:lock", "{fz}:n"
    slot = key_slot(name.encode())
    src = c3.owner(slot)
    dst = other_than(src)
    rc = client(c3)
    lock = fencelock.Lock(rc, name, timeout=60)
    assert lock.acquire()
    assert lock.fenced("INCR", data) == 1
    c3.begin_migration(slot, src, dst)
    assert lock.fenced("INCR", data) == 2, "keys not moved yet: it runs at the old owner"
    # Its keys split between the two nodes: -TRYAGAIN, raised, and nothing ran.
    c3.conns[src].execute_command("MIGRATE", "127.0.0.1", c3.nodes[dst].port, "", 0, 5000, "KEYS", data)
    with pytest.raises(redis.exceptions.TryAgainError):
        lock.fenced("INCR", data)
    assert c3.move_keys(slot, src, dst) == 2  # the lock and its fence
    reset_counts(c3)
    assert lock.fenced("INCR", data) == 3
    with pytest.raises(fencelock.StaleTokenError):
        fencelock.fenced(rc, f"{name}:fence", lock.token - 1, "INCR", data)
    assert lock.check_fence()
    lock.release()
    assert c3.calls(src, "FENCE.CALL") == {"calls": 0, "rejected_calls": 2}
    assert c3.calls(dst, "FENCE.CALL") == {"calls": 2, "rejected_calls": 0}
    assert c3.calls(src, "LOCK.RELEASE") == {"calls": 0, "rejected_calls": 1}
    assert c3.calls(dst, "LOCK.RELEASE") == {"calls": 1, "rejected_calls": 0}
    c3.end_migration(slot, src, dst)
    assert c3.conns[dst].get(data) == b"3", "each write once, at the importing node"
    assert info(c3.conns[dst], "LOCK.INFO", name) == {}
    rc.close()


def test_fenced_and_release_follow_ask_during_a_move_asyncio(c3):
    async def body() -> None:
        name, data = "{afz}:lock", "{afz}:n"
        slot = key_slot(name.encode())
        src = c3.owner(slot)
        dst = other_than(src)
        rc = aclient(c3)
        lock = fa.Lock(rc, name, timeout=60)
        assert await lock.acquire()
        assert await lock.fenced("INCR", data) == 1
        c3.begin_migration(slot, src, dst)
        assert await lock.fenced("INCR", data) == 2
        assert c3.move_keys(slot, src, dst) == 3
        reset_counts(c3)
        assert await lock.fenced("INCR", data) == 3
        with pytest.raises(fencelock.StaleTokenError):
            await fa.fenced(rc, f"{name}:fence", lock.token - 1, "INCR", data)
        await lock.release()
        assert c3.calls(src, "FENCE.CALL") == {"calls": 0, "rejected_calls": 2}
        assert c3.calls(dst, "FENCE.CALL") == {"calls": 2, "rejected_calls": 0}
        assert c3.calls(dst, "LOCK.RELEASE") == {"calls": 1, "rejected_calls": 0}
        c3.end_migration(slot, src, dst)
        assert c3.conns[dst].get(data) == b"3"
        await rc.aclose()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_redirected_blocking_acquire_keeps_its_deadline(c3):
    """A -MOVED that ends a long wait at the old owner: the acquire sent again at the
    new owner waits only for what is left of its timeout."""
    name = "{late}:lock"
    slot = key_slot(name.encode())
    src = c3.owner(slot)
    dst = other_than(src)
    holder_rc, waiter_rc = client(c3), client(c3)
    assert fencelock.Lock(holder_rc, name, timeout=60).acquire()
    reset_counts(c3)
    waiter = fencelock.Lock(waiter_rc, name, timeout=60)
    got: Dict[str, Any] = {}

    def wait() -> None:
        start = time.monotonic()
        got["ok"] = waiter.acquire(timeout=1.5)
        got["took"] = time.monotonic() - start

    started = time.monotonic()
    t = threading.Thread(target=wait)
    t.start()
    wait_until(lambda: waiters(c3, src, name) == 1, what="the waiter queued at the old owner")
    # Not a wait for a condition: the move is placed late in the wait on purpose, so
    # that an acquire sent again with its whole WAIT would end 2.2 s after the start.
    time.sleep(max(0.0, started + 0.7 - time.monotonic()))
    move(c3, slot, src, dst)
    wait_until(lambda: waiters(c3, dst, name) == 1 or not t.is_alive(), what="the waiter queued at the new owner")
    assert waiters(c3, dst, name) == 1, f"the waiter did not follow the move: {got}"
    t.join(5)
    assert got["ok"] is False and 1.4 <= got["took"] < 1.9, got
    assert [c3.calls(n, "LOCK.ACQUIRE")["calls"] for n in (src, dst)] == [1, 1]
    holder_rc.close()
    waiter_rc.close()


def test_a_redirected_blocking_acquire_keeps_its_deadline_asyncio(c3):
    async def body() -> None:
        name = "{alate}:lock"
        slot = key_slot(name.encode())
        src = c3.owner(slot)
        dst = other_than(src)
        holder_rc, waiter_rc = aclient(c3), aclient(c3)
        assert await fa.Lock(holder_rc, name, timeout=60).acquire()
        waiter = fa.Lock(waiter_rc, name, timeout=60)
        started = time.monotonic()
        task = asyncio.create_task(waiter.acquire(timeout=1.5))
        await until(lambda: waiters(c3, src, name) == 1, what="the waiter queued at the old owner")
        await asyncio.sleep(max(0.0, started + 0.7 - time.monotonic()))  # as in the sync test
        move(c3, slot, src, dst)
        await until(lambda: waiters(c3, dst, name) == 1 or task.done(), what="the waiter queued at the new owner")
        assert waiters(c3, dst, name) == 1, "the waiter did not follow the move"
        assert await asyncio.wait_for(task, 5) is False
        took = time.monotonic() - started
        assert 1.4 <= took < 1.9, took
        await holder_rc.aclose()
        await waiter_rc.aclose()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_resent_acquire_keeps_its_deadline():
    from fencelock._core import Once

    step = Once(("LOCK.ACQUIRE", "k", b"o", 1000, "WAIT", 2000), 3.0, undo=("LOCK.RELEASE", "k", b"o"), wait_ms=2000)
    again = step.resent(0.5)
    assert again.args == ("LOCK.ACQUIRE", "k", b"o", 1000, "WAIT", 1500) and again.wait == pytest.approx(2.5)
    assert again.undo == step.undo and again.wait_ms == 1500
    late = step.resent(2.0)  # the deadline has passed: one last try
    assert late.args == ("LOCK.ACQUIRE", "k", b"o", 1000) and late.wait is None and late.wait_ms is None
    unlimited = Once(("LOCK.ACQUIRE", "k", b"o", 1000, "WAIT", 0), float("inf"), wait_ms=0)
    assert unlimited.resent(5.0) == unlimited
    release = Once(("LOCK.RELEASE", "k", b"o"))
    assert release.resent(1.0) == release


def test_no_grant_is_left_when_the_importing_node_stalls_after_ask(c3):
    """A blocking acquire sent on with -ASK to an importing node that is stalled: no
    reply comes, so the release goes down the same connection, after ASKING too (else
    the importing node would redirect it), and the late grant is undone."""

    def check(name: str, slot: int, src: int, dst: int) -> None:
        wait_until(lambda: sum(c3.calls(dst, "LOCK.RELEASE").values()) == 1, what="the stalled node ran what it was sent")
        assert c3.calls(dst, "LOCK.ACQUIRE") == {"calls": 1, "rejected_calls": 0}, "it ran the acquire late"
        assert c3.calls(dst, "LOCK.RELEASE") == {"calls": 1, "rejected_calls": 0}, "and the release right after"
        assert c3.calls(src, "LOCK.ACQUIRE") == {"calls": 0, "rejected_calls": 1}
        c3.end_migration(slot, src, dst)
        assert info(c3.conns[dst], "LOCK.INFO", name) == {}, "no orphan grant"

    def prepare(name: str) -> Any:
        slot = key_slot(name.encode())
        src = c3.owner(slot)
        dst = other_than(src)
        c3.begin_migration(slot, src, dst)  # a free lock has no key: -ASK at once
        reset_counts(c3)
        return slot, src, dst

    # A connection to the node is made before it stalls (redis-py's handshake on a new
    # one would wait for it without limit), and the stall stays well under the
    # cluster's node timeout (1 s).
    name = "{stall}:lock"
    slot, src, dst = prepare(name)
    rc = client(c3)
    rc.get_redis_connection(rc.get_node(port=c3.nodes[dst].port, host="127.0.0.1")).ping()
    c3.nodes[dst].pause()
    try:
        with pytest.raises(redis.exceptions.TimeoutError):
            fencelock.Lock(rc, name, timeout=60, wait_margin=0.2).acquire(timeout=0.1)
    finally:
        c3.nodes[dst].resume()
    check(name, slot, src, dst)
    rc.close()

    async def body() -> None:
        name = "{astall}:lock"
        slot, src, dst = prepare(name)
        rc = aclient(c3)
        await rc.execute_command("PING", target_nodes=rc.get_node(host="127.0.0.1", port=c3.nodes[dst].port))
        c3.nodes[dst].pause()
        try:
            with pytest.raises(redis.exceptions.TimeoutError):
                await fa.Lock(rc, name, timeout=60, wait_margin=0.2).acquire(timeout=0.1)
        finally:
            c3.nodes[dst].resume()
        check(name, slot, src, dst)
        await rc.aclose()

    asyncio.run(asyncio.wait_for(body(), 30))
    c3.await_ok()
