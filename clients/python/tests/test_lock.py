"""fencelock.Lock against a real server: grants, tokens, server-side waiting without
re-sends, re-entry, the keeper, and the lost-lock signal."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.exceptions import LockError, LockNotOwnedError
from redis.retry import Retry

import fencelock
from conftest import info, keeper_threads, keyspace, subscribers, wait_until


def test_readme_example(r):
    with fencelock.Lock(r, "{acct}:lock") as lock:
        lock.fenced("INCRBY", "{acct}:balance", 100)
        held = info(r, "LOCK.INFO", "{acct}:lock")
        assert held["owner"] == lock.owner and held["token"] == lock.token > 0
        assert held["ttl"] > 29000  # the default lease, kept by the keeper
    assert r.get("{acct}:balance") == b"100"
    assert lock.token is None
    assert r.exists("{acct}:lock") == 0  # released: the server keeps no key


def test_one_holder_at_a_time_and_tokens_only_grow(r):
    a, b = fencelock.Lock(r, "m"), fencelock.Lock(r, "m")
    assert a.acquire()
    first = a.token
    assert not b.acquire(blocking=False)
    assert b.token is None and not b.owned() and b.locked()
    a.release()
    assert b.acquire(blocking=False)
    assert b.token > first
    assert b.owned() and not a.owned()
    b.release()
    assert not b.locked()


def test_waiter_is_served_by_the_server_with_one_command(server, r):
    holder, waiter = fencelock.Lock(r, "q"), fencelock.Lock(r, "q")
    holder.acquire()
    first, result = holder.token, []

    def wait() -> None:
        result.append((waiter.acquire(timeout=10), waiter.token))
        waiter.release()

    t = threading.Thread(target=wait)
    t.start()
    wait_until(lambda: info(r, "LOCK.INFO", "q")["waiters"] == 1, what="the waiter queued in the server")
    holder.release()
    t.join(5)
    assert result[0][0] is True and result[0][1] > first
    assert server.calls("LOCK.ACQUIRE") == 2  # the holder's and the waiter's: nobody polls


def test_wait_longer_than_socket_timeout_is_sent_once(server, r):
    # A client that re-sends on timeouts, as the issue describes: a plain blocking
    # LOCK.ACQUIRE through it arrives several times.
    eager = server.client(socket_timeout=0.1, retry=Retry(NoBackoff(), 3), retry_on_timeout=True)
    fencelock.Lock(r, "slow").acquire()
    with pytest.raises(redis.TimeoutError):
        eager.execute_command("LOCK.ACQUIRE", "slow", "plain", 10000, "WAIT", 400)
    assert server.calls("LOCK.ACQUIRE") > 2
    r.config_resetstat()

    waiter = fencelock.Lock(eager, "slow")
    started = time.monotonic()
    assert waiter.acquire(timeout=0.5) is False  # the server's nil, not a client timeout
    assert time.monotonic() - started >= 0.5
    assert server.calls("LOCK.ACQUIRE") == 1
    wait_until(lambda: info(r, "LOCK.INFO", "slow")["waiters"] == 0, what="no waiter left")


def test_a_stalled_server_fails_the_acquire_without_an_orphan_grant(fresh_server):
    """The server stalls (SIGSTOP) while a blocking acquire is in flight and the holder's
    release is queued before it: the client gives up at WAIT + wait_margin, and when the
    server runs again the grant it then makes to the abandoned attempt must not stay:
    the client hung up and sent a release for it."""
    r = fresh_server.client()
    r.execute_command("LOCK.ACQUIRE", "stall", "holder", 10000)
    waiter_client = fresh_server.client()
    waiter_client.ping()  # a warm pool, as in a running application
    waiter = fencelock.Lock(waiter_client, "stall", wait_margin=0.3)
    clients_before = r.info("clients")["connected_clients"]
    holder_conn = r.connection_pool.get_connection("LOCK.RELEASE")
    fresh_server.pause()
    try:
        holder_conn.send_command("LOCK.RELEASE", "stall", "holder")  # runs first on resume
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            waiter.acquire(timeout=0.2)
        assert time.monotonic() - started < 3
    finally:
        fresh_server.resume()
    assert holder_conn.read_response() == 1
    r.connection_pool.release(holder_conn)
    wait_until(
        lambda: r.info("clients")["connected_clients"] == clients_before - 1,
        what="the server to see the abandoned connections close",
    )
    assert r.execute_command("LOCK.INFO", "stall") is None
    assert fresh_server.calls("LOCK.ACQUIRE") == 2  # the attempt was not re-sent
    r.close()


def test_reentry_keeps_the_token_and_counts_holds(r):
    lock = fencelock.Lock(r, "re")
    with lock:
        token = lock.token
        with lock:
            assert lock.token == token
            assert info(r, "LOCK.INFO", "re")["holds"] == 2
        assert info(r, "LOCK.INFO", "re")["holds"] == 1
        assert lock.owned()
    assert r.execute_command("LOCK.INFO", "re") is None


def test_threads_sharing_one_lock_object_exclude_each_other(r):
    lock = fencelock.Lock(r, "shared")
    lock.acquire()
    other = []
    t = threading.Thread(target=lambda: other.append((lock.acquire(blocking=False), lock.token)))
    t.start()
    t.join(5)
    assert other == [(False, None)]
    lock.release()


def test_decorator_runs_each_call_holding_the_lock(r):
    inside, most, tokens = [], [], []
    lock = fencelock.Lock(r, "deco")

    @lock
    def critical(i: int) -> int:
        inside.append(i)
        most.append(len(inside))
        tokens.append((lock.token, info(r, "LOCK.INFO", "deco")["owner"] == lock.owner))
        inside.remove(i)
        return i * 2

    threads = [threading.Thread(target=critical, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert max(most) == 1 and len(tokens) == 6
    assert all(held for _, held in tokens) and len({t for t, _ in tokens}) == 6
    assert critical(21) == 42 and critical.__name__ == "critical"
    with pytest.raises(TypeError, match="coroutine"):
        lock(asyncio_coroutine_function)


async def asyncio_coroutine_function() -> None:
    pass


def test_release_errors(r):
    lock = fencelock.Lock(r, "rel")
    with pytest.raises(LockError, match="unlocked"):
        lock.release()
    lock.acquire()
    r.delete("rel")
    with pytest.raises(LockNotOwnedError):
        lock.release()
    assert lock.lost.is_set()


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda r: fencelock.Lock(r, ""), ValueError, "lock name"),
        (lambda r: fencelock.Lock(r, "k", timeout=0), ValueError, "timeout"),
        (lambda r: fencelock.Lock(r, "k", timeout=-1), ValueError, "timeout"),
        (lambda r: fencelock.Lock(r, "k", timeout="5"), TypeError, "timeout"),
        (lambda r: fencelock.Lock(r, "k", timeout=2.0**41), ValueError, "timeout"),
        (lambda r: fencelock.Lock(r, "k", blocking_timeout=-2), ValueError, "blocking timeout"),
        (lambda r: fencelock.Lock(r, "k", owner=b""), ValueError, "owner"),
        (lambda r: fencelock.Lock(r, "k", on_lost=5), TypeError, "on_lost"),
        (lambda r: fencelock.Lock(r, "k", wait_margin=-1), ValueError, "wait_margin"),
        (lambda r: fencelock.Lock(redis.asyncio.Redis(), "k"), TypeError, "asyncio"),
        (lambda r: fencelock.Lock("localhost", "k"), TypeError, "client"),
        (lambda r: fencelock.Lock(r, "k").acquire(timeout=1, blocking_timeout=2), ValueError, "not both"),
        (lambda r: fencelock.Lock(r, "k").acquire(timeout=-5), ValueError, "blocking timeout"),
        (lambda r: fencelock.Lock(r, "k").extend(1), LockError, "unlocked"),
        (lambda r: fencelock.Lock(r, "k").fenced("SET", "a", 1), LockError, "unlocked"),
        (lambda r: fencelock.fenced(r, "f", 0, "SET", "a", 1), ValueError, "token"),
        (lambda r: fencelock.fenced(r, "f", 1), ValueError, "command"),
        (lambda r: fencelock.Semaphore(r, "s", 0), ValueError, "limit"),
        (lambda r: fencelock.Semaphore(r, "s", 2, permits=3), ValueError, "permits"),
    ],
)
def test_bad_input_is_refused_clearly(r, make, error, message):
    with pytest.raises(error, match=message):
        make(r)
    assert r.dbsize() == 0  # and nothing reached the server's data


def test_zero_timeout_is_one_try_not_wait_forever(r):
    fencelock.Lock(r, "z").acquire()
    started = time.monotonic()
    assert fencelock.Lock(r, "z").acquire(timeout=0) is False
    assert time.monotonic() - started < 1


def test_default_lease_is_30s_renewed_every_10s(r):
    lock = fencelock.Lock(r, "shape")
    assert (lock.ttl_ms, lock.renew_interval) == (30000, 10.0)
    with lock:
        assert 29000 < info(r, "LOCK.INFO", "shape")["ttl"] <= 30000
        assert len(keeper_threads("shape")) == 1
    # With a lease of its own (redis-py's `timeout`), the lock ends when it says.
    assert fencelock.Lock(r, "shape", timeout=5).renew_interval is None
    assert fencelock.Lock(r, "shape", timeout=3, auto_renew=True).renew_interval == 1.0


def test_keeper_renews_while_held_and_stops_on_release(server, r):
    lock = fencelock.Lock(r, "kept", timeout=0.3, auto_renew=True)
    lock.acquire()
    token, started = lock.token, time.monotonic()
    wait_until(lambda: server.calls("LOCK.EXTEND") >= 4, what="four renewals")
    assert time.monotonic() - started > 0.3  # held past its ttl
    assert lock.owned() and lock.token == token and not lock.lost.is_set()
    lock.release()
    wait_until(lambda: not keeper_threads("kept"), what="the keeper thread to end")
    assert r.execute_command("LOCK.INFO", "kept") is None
    assert not lock.lost.is_set()


def test_lost_when_a_renewal_answers_0(r):
    told = []
    lock = fencelock.Lock(r, "gone", timeout=0.3, auto_renew=True, on_lost=told.append)
    lock.acquire()
    r.delete("gone")
    assert lock.lost.wait(5)
    assert told == [lock]
    wait_until(lambda: not keeper_threads("gone"), what="the keeper thread to end")
    with pytest.raises(LockNotOwnedError):
        lock.release()


def test_lost_on_a_keyspace_event_long_before_the_lease_ends(r):
    told = []
    lock = fencelock.Lock(r, "evt", timeout=60, watch_events=True, on_lost=told.append)
    lock.acquire()
    wait_until(lambda: subscribers(r, keyspace("evt")) == 1, what="the keeper's subscription")
    r.pexpire("evt", 1)  # Redis itself removes the lock (an `expired` event)
    assert lock.lost.wait(5)
    assert told == [lock]
    wait_until(lambda: subscribers(r, keyspace("evt")) == 0, what="the subscription to end")


def test_lost_when_the_lease_runs_out_unrenewed(r):
    told = []
    lock = fencelock.Lock(r, "short", timeout=0.2, on_lost=told.append)
    lock.acquire()
    assert lock.lost.wait(5)
    assert told == [lock]
    assert r.execute_command("LOCK.INFO", "short") is None


def test_fenced_writes_refuse_an_older_token(r):
    old = fencelock.Lock(r, "{acct}:lock")
    old.acquire()
    assert old.fenced("SET", "{acct}:balance", 100) == b"OK"  # the raw reply
    r.delete("{acct}:lock")  # old's lease ends early
    with fencelock.Lock(r, "{acct}:lock") as new:
        assert new.fenced("SET", "{acct}:balance", 200) == b"OK"
        with pytest.raises(fencelock.StaleTokenError) as stale:
            old.fenced("SET", "{acct}:balance", 0)
        assert (stale.value.token, stale.value.highest) == (old.token, new.token)
        with pytest.raises(fencelock.StaleTokenError):
            old.check_fence()
        assert new.check_fence() is True
        assert fencelock.check_fence(r, "{acct}:lock:fence", new.token) is True
        newest = new.token
    assert r.get("{acct}:balance") == b"200"
    assert r.execute_command("FENCE.CURRENT", "{acct}:lock:fence") == newest


def test_fenced_passes_the_inner_reply_and_errors(r):
    token = r.execute_command("FENCE.NEXT", "f")
    assert fencelock.fenced(r, "f", token, "RPUSH", "jobs", "a", "b") == 2
    assert fencelock.fenced(r, "f", token, "LRANGE", "jobs", 0, -1) == [b"a", b"b"]
    with pytest.raises(redis.ResponseError, match="FENCE.CALL cannot run") as refused:
        fencelock.fenced(r, "f", token, "BLPOP", "jobs", 0)
    assert not isinstance(refused.value, fencelock.StaleTokenError)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        fencelock.fenced(r, "f", token, "INCR", "jobs")


CHILD = """
import sys, fencelock, redis
lock = fencelock.Lock(redis.Redis(port=int(sys.argv[1])), "{job}:lock", timeout=0.4, auto_renew=True)
lock.acquire()
lock.fenced("RPUSH", "{job}:log", "child-early")
print("holding", lock.token, flush=True)
lock.lost.wait()
print("lost", flush=True)
try:
    lock.fenced("RPUSH", "{job}:log", "child-late")
    print("accepted", flush=True)
except fencelock.StaleTokenError as e:
    print("stale", e.token, e.highest, flush=True)
"""


def test_a_paused_holder_loses_its_lease_and_is_told(server, r):
    """A holder stopped (SIGSTOP, as a GC pause or VM stall would) past its lease: the
    lock goes to the next client, and when the holder runs again its keeper reports the
    loss and the fence refuses its late write."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(server.port)], stdout=subprocess.PIPE, text=True
    )
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.split()) for line in child.stdout], daemon=True).start()
    try:
        word, child_token = lines.get(timeout=20)
        assert word == "holding"
        child.send_signal(signal.SIGSTOP)
        with fencelock.Lock(r, "{job}:lock", timeout=10, blocking_timeout=5) as me:
            assert me.token > int(child_token)
            me.fenced("RPUSH", "{job}:log", "parent")
            child.send_signal(signal.SIGCONT)
            assert lines.get(timeout=10) == ["lost"]
            assert lines.get(timeout=10) == ["stale", child_token, str(me.token)]
            assert me.owned()
        assert r.lrange("{job}:log", 0, -1) == [b"child-early", b"parent"]
        assert child.wait(10) == 0
    finally:
        child.kill()
        child.wait()
