"""fencelock.RWLock and fencelock.Semaphore against a real server."""

from __future__ import annotations

import threading

import pytest
import redis

import fencelock
from conftest import info, keeper_threads, wait_until


def rw_info(r, key):
    reply = info(r, "RWLOCK.INFO", key)
    reply["holders"] = [{k.decode(): v for k, v in zip(h[::2], h[1::2])} for h in reply.get("holders", [])]
    return reply


def test_readers_share_and_a_writer_excludes(r):
    a, b, w = (fencelock.RWLock(r, "doc") for _ in range(3))
    with a.read, b.read:
        assert a.read.token != b.read.token
        assert rw_info(r, "doc")["mode"] == b"read"
        assert not w.write.acquire(blocking=False)
        assert w.read.acquire(blocking=False)  # readers still share
        w.read.release()
        assert a.read.locked() is False  # no writer holds
        assert w.write.locked() is True
    with w.write:
        assert not a.read.acquire(blocking=False)
        assert a.read.locked() is True
        assert rw_info(r, "doc")["mode"] == b"write"


def test_a_waiting_writer_is_granted_when_the_readers_leave(server, r):
    reader, writer = fencelock.RWLock(r, "cache"), fencelock.RWLock(r, "cache")
    reader.read.acquire()
    got = []

    def write() -> None:
        with writer.write:
            got.append(writer.write.token)

    t = threading.Thread(target=write)
    t.start()
    wait_until(lambda: rw_info(r, "cache")["waiters"] == 1, what="the writer queued")
    first = reader.read.token
    reader.read.release()
    t.join(5)
    assert got and got[0] > first
    assert server.calls("RWLOCK.WLOCK") == 1


def test_the_writer_downgrades_to_reader_under_one_owner(r):
    rw = fencelock.RWLock(r, "dg")
    with rw.write:
        with rw.read:  # at once: same owner
            holders = rw_info(r, "dg")["holders"]
            assert {h["mode"] for h in holders} == {b"read", b"write"}
            assert len({h["owner"] for h in holders}) == 1 == len({rw.read.owner, rw.write.owner})
            assert rw.read.owned() and rw.write.owned()
        assert not rw.read.owned() and rw.write.owned()


def test_rwlock_views_have_the_keeper_and_fences(server, r):
    old = fencelock.RWLock(r, "{c}:lock", timeout=0.3, auto_renew=True)
    with old.write:
        wait_until(lambda: server.calls("RWLOCK.EXTEND") >= 4, what="renewals past the ttl")
        assert old.write.owned()
        old.write.fenced("HSET", "{c}:data", "v", 1)
        token = old.write.token
    wait_until(lambda: not keeper_threads("{c}:lock"), what="the keeper to end")
    with fencelock.RWLock(r, "{c}:lock").write as newer:
        newer.fenced("HSET", "{c}:data", "v", 2)
    with pytest.raises(fencelock.StaleTokenError):
        fencelock.fenced(r, "{c}:lock:fence", token, "HSET", "{c}:data", "v", 3)
    assert r.hget("{c}:data", "v") == b"2"


def test_semaphore_counts_permits(server, r):
    a, b, c = (fencelock.Semaphore(r, "pool", 2) for _ in range(3))
    assert a.acquire() and b.acquire()
    assert a.token != b.token
    assert c.locked() and not c.acquire(blocking=False)
    got = []

    def take() -> None:
        got.append(c.acquire(timeout=5))
        c.release()

    t = threading.Thread(target=take)
    t.start()
    wait_until(lambda: info(r, "SEM.INFO", "pool")["waiters"] == 1, what="the third holder queued")
    a.release()
    t.join(5)
    assert got == [True]
    b.release()
    assert r.execute_command("SEM.INFO", "pool") is None


def test_semaphore_permits_and_limit_mismatch(r):
    big = fencelock.Semaphore(r, "lim", 3, permits=2)
    with big:
        assert info(r, "SEM.INFO", "lim")["available"] == 1
        assert big.locked()  # two more are not free
        with pytest.raises(redis.ResponseError, match="limit mismatch"):
            fencelock.Semaphore(r, "lim", 4).acquire()
        assert fencelock.Semaphore(r, "lim", 3).acquire(blocking=False)
