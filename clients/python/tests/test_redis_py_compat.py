"""fencelock.Lock as redis-py's `lock_class=`: same constructor, same methods, same
errors, with fencing tokens and server-side waiting underneath."""

from __future__ import annotations

import inspect
import threading
import time

import pytest
import redis
import redis.lock
from redis.exceptions import LockError, LockNotOwnedError

import fencelock
from conftest import info, subscribers, wait_until


def test_constructor_and_methods_match_redis_py():
    ours = list(inspect.signature(fencelock.Lock.__init__).parameters.values())
    theirs = list(inspect.signature(redis.lock.Lock.__init__).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[: len(theirs)]] == [
        (p.name, p.kind, p.default) for p in theirs
    ]
    # Beyond the installed redis-py's: redis-py 6's last parameter, then keywords only.
    extra = [p for p in ours[len(theirs):] if p.kind is not p.KEYWORD_ONLY]
    assert [p.name for p in extra] in ([], ["raise_on_release_error"])
    for method in ("acquire", "release", "extend", "reacquire", "owned", "locked"):
        theirs_kw = set(inspect.signature(getattr(redis.lock.Lock, method)).parameters)
        assert theirs_kw <= set(inspect.signature(getattr(fencelock.Lock, method)).parameters), method


def test_redis_lock_with_lock_class(server, r):
    lock = r.lock("job", timeout=5, blocking_timeout=0.3, lock_class=fencelock.Lock)
    assert isinstance(lock, fencelock.Lock)
    with lock:
        assert lock.token > 0 and lock.owned() and lock.locked()
        assert 4000 < info(r, "LOCK.INFO", "job")["ttl"] <= 5000
        other = r.lock("job", timeout=5, blocking_timeout=0.3, lock_class=fencelock.Lock)
        started = time.monotonic()
        with pytest.raises(LockError, match="Unable to acquire"):
            with other:
                pass
        assert time.monotonic() - started >= 0.3
        assert not other.owned() and other.locked()
    assert not lock.locked()
    assert server.calls("LOCK.ACQUIRE") == 2  # one wait in the server, no polling


def test_acquire_takes_redis_py_keywords(r):
    holder = r.lock("kw", timeout=5, lock_class=fencelock.Lock)
    assert holder.acquire(blocking=True, blocking_timeout=1, sleep=0.5, token="me")
    assert info(r, "LOCK.INFO", "kw")["owner"] == b"me"
    waiter = r.lock("kw", timeout=5, lock_class=fencelock.Lock)
    assert waiter.acquire(blocking=False) is False
    assert waiter.acquire(blocking_timeout=0.1) is False
    holder.release()
    assert waiter.acquire(blocking_timeout=1) is True
    waiter.release()


def test_blocking_false_at_construction(r):
    r.lock("nb", lock_class=fencelock.Lock).acquire()
    lock = r.lock("nb", blocking=False, lock_class=fencelock.Lock)
    started = time.monotonic()
    assert lock.acquire() is False
    assert time.monotonic() - started < 1


def test_extend_adds_or_replaces_and_reacquire_resets(r):
    lock = r.lock("ext", timeout=2, lock_class=fencelock.Lock)
    lock.acquire()
    assert lock.extend(10) is True
    assert 11000 < info(r, "LOCK.INFO", "ext")["ttl"] <= 12000
    assert lock.extend(3, replace_ttl=True) is True
    assert 2000 < info(r, "LOCK.INFO", "ext")["ttl"] <= 3000
    assert lock.reacquire() is True
    assert 1000 < info(r, "LOCK.INFO", "ext")["ttl"] <= 2000
    r.delete("ext")
    for call in (lambda: lock.extend(1), lock.reacquire):
        with pytest.raises(LockNotOwnedError):
            call()
    assert lock.lost.is_set()


def test_a_timeout_lock_expires_like_redis_py(r):
    lock = r.lock("exp", timeout=0.2, lock_class=fencelock.Lock)
    lock.acquire()
    assert lock.renew_interval is None
    wait_until(lambda: not lock.owned(), what="the lease to end")
    assert not lock.locked()
    with pytest.raises(LockNotOwnedError):
        lock.release()


def test_raise_on_release_error_false_logs_instead(r, caplog):
    lock = fencelock.Lock(r, "quiet", 5, 0.1, True, None, True, False)
    with lock:
        r.delete("quiet")
    assert lock.lost.is_set()
    assert "was not held any more" in caplog.text
    with pytest.raises(LockNotOwnedError):
        with fencelock.Lock(r, "loud", 5):
            r.delete("loud")


def test_thread_local_false_lets_another_thread_release(r):
    lock = r.lock("pass", timeout=5, thread_local=False, lock_class=fencelock.Lock)
    lock.acquire()
    done = []
    t = threading.Thread(target=lambda: done.append(lock.release()))
    t.start()
    t.join(5)
    assert done == [None]
    assert not lock.locked()


@pytest.mark.parametrize("options", [{"decode_responses": True}, {"protocol": 3}, {"db": 3}])
def test_client_options(server, options):
    c = server.client(**options)
    try:
        lock = fencelock.Lock(c, "opts", owner="worker-1", watch_events=True, timeout=30)
        assert lock.acquire()
        assert lock.owned() and lock.locked()
        assert lock.info()["owner"] in (b"worker-1", "worker-1")
        channel = f"__keyspace@{options.get('db', 0)}__:opts"
        wait_until(lambda: subscribers(c, channel) == 1, what="the keeper subscribed to this db's channel")
        c.delete("opts")
        assert lock.lost.wait(5)
        with pytest.raises(LockNotOwnedError):
            lock.release()
    finally:
        c.close()
