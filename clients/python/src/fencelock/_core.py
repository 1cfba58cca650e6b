"""What the synchronous and the asyncio classes share: argument checks, reply parsing,
hold state, and every operation written once as a generator that yields the requests it
needs (`Call`, `Once`, `Pause`) and receives their replies. `fencelock._sync` and
`fencelock.asyncio` only carry those requests out, with blocking or awaiting I/O."""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, Generator, Optional, Tuple, Union

from redis.exceptions import LockError, LockNotOwnedError, RedisError, ResponseError

log = logging.getLogger("fencelock")

KeyT = Union[str, bytes]
MAX_TTL_MS = 1 << 40
MAX_LIMIT = 1 << 31
# Redisson's watchdog shape: a 30 s lease renewed every 10 s, so a holder that dies
# keeps others out for at most 30 s while a live one never loses it to a slow renewal.
DEFAULT_LEASE = 30.0
RENEW_FRACTION = 1 / 3
# How much longer than WAIT the client waits for the reply of a blocking acquire: the
# server answers at WAIT at the latest, so only a stalled server or network uses it.
WAIT_MARGIN = 1.0
# Events that a holder's own work or other owners cause without ending its hold.
_HARMLESS_EVENTS = (".acquire", ".handoff", ".release")

Steps = Generator["Request", Any, Any]


@dataclass(frozen=True)
class Call:
    """Send through the client: cluster routing and the client's retry policy apply, so
    only for commands that may safely arrive twice (reads, extends, FENCE.CHECK)."""

    args: Tuple[Any, ...]


@dataclass(frozen=True)
class Once:
    """Send once on one connection, never re-sent (but after a cluster's -MOVED or -ASK,
    which refuse it unrun: see `resent`). `wait`: None reads with the client's
    socket timeout; a number of seconds replaces it (math.inf: no limit). If no reply
    comes, `undo` (if any) is sent down the same connection before it is closed: the
    server runs it right after the command if it ever runs that (a stalled server
    holds both in its input), and closing takes a blocked waiter off its queue."""

    args: Tuple[Any, ...]
    wait: Optional[float] = None
    undo: Optional[Tuple[Any, ...]] = None
    wait_ms: Optional[int] = None  # a blocking acquire's WAIT argument, the last of `args`

    def resent(self, elapsed: float) -> "Once":
        """This request, to send again after a -MOVED or -ASK `elapsed` seconds after
        it was first sent. Those replies come before the command runs (a waiter that
        is redirected is queued nowhere), so sending it to the node named is no second
        run. A blocking acquire keeps its deadline: its WAIT, and the read limit with
        it, shrink by the time it already waited (a -MOVED can end a long wait), down
        to a single try once the deadline has passed."""
        if not self.wait_ms:  # no WAIT, or WAIT 0 (no limit)
            return self
        assert self.wait is not None and self.args[-2] == "WAIT"
        margin = self.wait - self.wait_ms / 1000
        left = self.wait_ms - int(elapsed * 1000)
        if left <= 0:
            return replace(self, args=self.args[:-2], wait=None, wait_ms=None)
        return replace(self, args=self.args[:-1] + (left,), wait=left / 1000 + margin, wait_ms=left)


@dataclass(frozen=True)
class Pause:
    """Keeper only: return after `seconds`, or earlier with the name of a keyspace
    event on the lock's key (None otherwise)."""

    seconds: float


Request = Union[Call, Once, Pause]


class StaleTokenError(ResponseError):
    """FENCE.CHECK or FENCE.CALL refused the token: a newer holder has already written
    through this fence. `token` and `highest` are parsed from the server's message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        m = re.match(r"STALE token (\d+) is older than (\d+)", message)
        self.token: Optional[int] = int(m.group(1)) if m else None
        self.highest: Optional[int] = int(m.group(2)) if m else None


def _stale_or(err: ResponseError) -> ResponseError:
    return StaleTokenError(str(err)) if str(err).startswith("STALE") else err


# ---- argument checks -------------------------------------------------------------


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value):
        raise ValueError(f"{what} must be a number of seconds, not NaN")
    return float(value)


def lease_ms(seconds: Any, what: str = "timeout") -> int:
    """A lease in seconds (redis-py's unit) as the server's whole milliseconds."""
    s = _number(seconds, what)
    if not 0.001 <= s <= MAX_TTL_MS / 1000:
        raise ValueError(f"{what} must be between 0.001 and {MAX_TTL_MS / 1000:.0f} seconds, not {seconds!r}")
    return int(s * 1000)


def wait_ms(blocking: bool, timeout: Any) -> Optional[int]:
    """The WAIT argument: None for a single try, 0 to wait without limit."""
    if not blocking:
        return None
    if timeout is None or timeout == -1 or timeout == math.inf:  # -1: threading.Lock's "no limit"
        return 0
    s = _number(timeout, "blocking timeout")
    if s < 0:
        raise ValueError(f"blocking timeout must be >= 0 (or None/-1 for no limit), not {timeout!r}")
    # WAIT 0 means "forever" on the server, so a zero timeout must be a single try.
    return None if s == 0 else max(1, math.ceil(s * 1000))


def _key(value: Any, what: str) -> KeyT:
    if not isinstance(value, (str, bytes)) or not value:
        raise ValueError(f"{what} must be a non-empty str or bytes, not {value!r}")
    return value


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what} must be an integer from {low} to {high}, not {value!r}")
    return value


def new_owner() -> str:
    # Readable in LOCK.INFO when someone asks who holds a lock; unique by the UUID.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"


# ---- replies ---------------------------------------------------------------------


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def parse_info(reply: Any) -> Optional[Dict[str, Any]]:
    """LOCK/RWLOCK/SEM.INFO as a dict with str field names, from RESP2 pairs or a RESP3
    map; `holders` becomes a list of such dicts."""
    if reply is None:
        return None
    pairs = reply.items() if isinstance(reply, dict) else zip(reply[::2], reply[1::2])
    info = {_text(k): v for k, v in pairs}
    if "holders" in info:
        info["holders"] = [parse_info(h) for h in info["holders"]]
    if "mode" in info:
        info["mode"] = _text(info["mode"])
    return info


# ---- holds -----------------------------------------------------------------------


class Hold:
    """One grant held by one owner: its token, the local hold count, and what the
    keeper needs. `expires_by` is a monotonic time by which the server has surely ended
    the lease unless it is extended: the deadline is set when the server handles the
    command, which is before its reply arrives."""

    def __init__(self, owner: bytes, token: int, lost: Any) -> None:
        self.owner = owner
        self.token = token
        self.depth = 1
        self.lost = lost  # threading.Event or asyncio.Event, set once the hold is lost
        self.is_lost = False
        self.stopped = False  # released to zero or lost: the keeper ends
        self.keeper: Any = None
        self.wake: Any = None  # the flavour's way to end the keeper's pause early
        self.expires_by = self.renew_at = 0.0
        self.guard = threading.Lock()

    def confirm(self, ttl_ms: int, renew_interval: Optional[float] = None) -> None:
        now = time.monotonic()
        self.expires_by = now + ttl_ms / 1000
        self.renew_at = now + renew_interval if renew_interval else self.expires_by


class Scope:
    """What one thread (or task) holds through one lock object: a shared owner and a
    hold per view (RWLock's read and write views share the owner, so a writer can
    downgrade)."""

    def __init__(self) -> None:
        self.owner: Optional[bytes] = None
        self.holds: Dict[str, Hold] = {}

    def active(self) -> bool:
        return any(h.depth > 0 for h in self.holds.values())


# ---- the operations --------------------------------------------------------------


class LockCore:
    """The behaviour of a lock view (Lock, Semaphore, RWLock.read, RWLock.write), minus
    I/O. Kind rules (command names, arguments, INFO layout) come from a `*Rules` mixin,
    I/O hooks from the flavour."""

    family: str  # keyspace event prefix
    ACQUIRE: str
    RELEASE: str
    EXTEND: str
    INFO: str
    view: str = "lock"
    raise_on_release_error = True

    redis: Any
    name: KeyT
    timeout: Optional[float]
    blocking: bool
    blocking_timeout: Optional[float]
    sleep: float
    thread_local: bool

    def _setup(
        self,
        redis: Any,
        name: Any,
        timeout: Optional[float],
        blocking: bool,
        blocking_timeout: Optional[float],
        *,
        owner: Optional[KeyT],
        auto_renew: Optional[bool],
        on_lost: Optional[Callable[[Any], Any]],
        watch_events: bool,
        fence_key: Optional[KeyT],
        wait_margin: float,
    ) -> None:
        self._check_client(redis)
        self.redis = redis
        self.name = _key(name, "lock name")
        self.timeout = timeout
        self.blocking = blocking
        self.blocking_timeout = blocking_timeout
        wait_ms(True, blocking_timeout)  # checked now rather than at the first acquire
        self.ttl_ms = lease_ms(DEFAULT_LEASE if timeout is None else timeout)
        # Like Redisson: renew when the caller named no lease; with a lease (redis-py's
        # `timeout`) the lock ends when it says unless auto_renew=True.
        renew = timeout is None if auto_renew is None else bool(auto_renew)
        self.renew_interval: Optional[float] = self.ttl_ms / 1000 * RENEW_FRACTION if renew else None
        if on_lost is not None and not callable(on_lost):
            raise TypeError("on_lost must be callable")
        self.on_lost = on_lost
        self.watch_events = bool(watch_events)
        self._fixed_owner = self._encode(_key(owner, "owner")) if owner is not None else None
        if fence_key is None:
            fence_key = self.name + b":fence" if isinstance(self.name, bytes) else self.name + ":fence"
        self.fence_key = _key(fence_key, "fence_key")
        self.wait_margin = _number(wait_margin, "wait_margin")
        if self.wait_margin < 0:
            raise ValueError("wait_margin must be >= 0")

    def _encode(self, value: Any) -> bytes:
        return value if isinstance(value, bytes) else self.redis.get_encoder().encode(value)

    # Kind rules (overridden by the *Rules mixins).
    def _acquire_args(self, owner: bytes, wait: Optional[int]) -> Tuple[Any, ...]:
        args: Tuple[Any, ...] = (self.ACQUIRE, self.name, owner, self.ttl_ms)
        return args if wait is None else args + ("WAIT", wait)

    def _entry(self, info: Optional[Dict[str, Any]], owner: bytes) -> Optional[Dict[str, Any]]:
        raise NotImplementedError

    def _busy(self, info: Optional[Dict[str, Any]]) -> bool:
        raise NotImplementedError

    # Flavour hooks.
    def _init_scopes(self, per_thread: bool) -> None:
        raise NotImplementedError

    def _check_client(self, redis: Any) -> None:
        raise NotImplementedError

    def _scope(self, create: bool) -> Optional[Scope]:
        raise NotImplementedError

    def _new_event(self) -> Any:
        raise NotImplementedError

    def _start_keeper(self, hold: Hold) -> None:
        raise NotImplementedError

    def _stop_keeper(self, hold: Hold) -> None:
        raise NotImplementedError

    def _call_back(self, fn: Callable[[Any], Any]) -> None:
        raise NotImplementedError

    # State.
    def _hold(self) -> Optional[Hold]:
        scope = self._scope(False)
        return scope.holds.get(self.view) if scope else None

    def _held(self, verb: str) -> Hold:
        hold = self._hold()
        if hold is None or hold.depth == 0:
            raise LockError(f"Cannot {verb} an unlocked lock", lock_name=self.name)
        return hold

    @property
    def token(self) -> Optional[int]:
        """The fencing token of the hold this thread (task) has; None when not held."""
        hold = self._hold()
        return hold.token if hold and hold.depth else None

    @property
    def owner(self) -> Optional[bytes]:
        """The owner string sent to the server for this thread's (task's) hold."""
        scope = self._scope(False)
        return scope.owner if scope else None

    @property
    def lost(self) -> Any:
        """An event set once the current (or last) hold of this thread (task) is lost."""
        hold = self._hold()
        return hold.lost if hold else self._new_event()

    @property
    def _needs_keeper(self) -> bool:
        return bool(self.renew_interval or self.watch_events or self.on_lost)

    def _lose(self, hold: Hold) -> None:
        with hold.guard:  # the keeper and the holder's thread may find it at once
            if hold.is_lost:
                return
            hold.is_lost = hold.stopped = True
        self._stop_keeper(hold)
        log.warning("fencelock: lost %s %r (token %s)", self.family, self.name, hold.token)
        if self.on_lost is not None:
            self._call_back(self.on_lost)
        # Last, so that whoever waits on the event sees what the callback did.
        hold.lost.set()

    def _still_mine(self, reply: Any, hold: Hold) -> bool:
        entry = self._entry(parse_info(reply), hold.owner)
        return entry is not None and entry.get("token") == hold.token

    def _acquire_steps(
        self,
        blocking: Optional[bool],
        timeout: Optional[float],
        blocking_timeout: Optional[float],
        owner: Optional[KeyT],
    ) -> Steps:
        if timeout is not None and blocking_timeout is not None and timeout != blocking_timeout:
            raise ValueError("pass timeout or blocking_timeout, not both")
        limit = timeout if timeout is not None else blocking_timeout
        wait = wait_ms(self.blocking if blocking is None else blocking, self.blocking_timeout if limit is None else limit)
        wanted = self._encode(_key(owner, "token")) if owner is not None else None
        scope = self._scope(True)
        assert scope is not None
        hold = scope.holds.get(self.view)
        if scope.active() and wanted is not None and wanted != scope.owner:
            raise LockError("this thread already holds the lock under another owner", lock_name=self.name)
        if scope.active() and wanted is None:
            wanted = scope.owner
        release = (self.RELEASE, self.name)
        if hold is not None and hold.depth and not hold.is_lost:
            # Re-entry: the server adds a hold and returns the same token at once.
            token = yield Once(self._acquire_args(hold.owner, None), undo=release + (hold.owner,))
            if token != hold.token:
                # The lease ended under us; a new token is a fresh grant nobody asked for.
                self._lose(hold)
                if token is not None:
                    yield Once(release + (hold.owner,))
                raise LockNotOwnedError("Cannot re-enter a lock whose lease was lost", lock_name=self.name)
            hold.depth += 1
            hold.confirm(self.ttl_ms, self.renew_interval)
            return True
        owner = scope.owner = wanted or self._fixed_owner or self._encode(new_owner())
        read_limit = None if wait is None else math.inf if wait == 0 else wait / 1000 + self.wait_margin
        # Should no reply come, the release undoes a grant made after we gave up.
        token = yield Once(self._acquire_args(owner, wait), read_limit, undo=release + (owner,), wait_ms=wait)
        if token is None:
            return False
        hold = Hold(scope.owner, token, self._new_event())
        hold.confirm(self.ttl_ms, self.renew_interval)
        scope.holds[self.view] = hold
        if self._needs_keeper:
            self._start_keeper(hold)
        return True

    def _release_steps(self) -> Steps:
        hold = self._held("release")
        # Forget first, like redis-py: if the reply is lost, the lease ends at its ttl.
        hold.depth -= 1
        if hold.depth == 0:
            # Stop the keeper before the server frees the lock, so that a renewal racing
            # the release is not taken for a lost lease.
            hold.stopped = True
            self._stop_keeper(hold)
        if not (yield Once((self.RELEASE, self.name, hold.owner))):
            hold.depth = 0
            self._lose(hold)
            raise LockNotOwnedError("Cannot release a lock that's no longer owned", lock_name=self.name)

    def _extend_steps(self, additional_time: float, replace_ttl: bool) -> Steps:
        hold = self._held("extend")
        ms = lease_ms(additional_time, "additional_time")
        if not replace_ttl:  # redis-py's meaning: add to what is left
            entry = self._entry(parse_info((yield Call((self.INFO, self.name)))), hold.owner)
            if entry is None or entry.get("token") != hold.token:
                self._lose(hold)
                raise LockNotOwnedError("Cannot extend a lock that's no longer owned", lock_name=self.name)
            ms = min(ms + int(entry.get("ttl") or 0), MAX_TTL_MS)
        if not (yield Call((self.EXTEND, self.name, hold.owner, ms))):
            self._lose(hold)
            raise LockNotOwnedError("Cannot extend a lock that's no longer owned", lock_name=self.name)
        hold.confirm(ms, self.renew_interval)
        return True

    def _reacquire_steps(self) -> Steps:
        hold = self._held("reacquire")
        if not (yield Call((self.EXTEND, self.name, hold.owner, self.ttl_ms))):
            self._lose(hold)
            raise LockNotOwnedError("Cannot reacquire a lock that's no longer owned", lock_name=self.name)
        hold.confirm(self.ttl_ms, self.renew_interval)
        return True

    def _owned_steps(self) -> Steps:
        hold = self._hold()
        if hold is None or hold.depth == 0:
            return False
        return self._still_mine((yield Call((self.INFO, self.name))), hold)

    def _locked_steps(self) -> Steps:
        return self._busy(parse_info((yield Call((self.INFO, self.name)))))

    def _info_steps(self) -> Steps:
        return parse_info((yield Call((self.INFO, self.name))))

    def _fence_args(self, verb: str, fence_key: Optional[KeyT]) -> Tuple[KeyT, int]:
        hold = self._held(verb)
        return (self.fence_key if fence_key is None else fence_key), hold.token

    def _keep_steps(self, hold: Hold) -> Steps:
        """The keeper: renews the lease every renew_interval while held, and reports the
        hold lost when an extend answers 0, when a keyspace event on the key turns out to
        have ended it, or when the lease has surely run out without a renewal (the
        process was paused, or the server could not be reached)."""
        # Just subscribed: a loss before that sent its event to nobody, so look once.
        check = self.watch_events
        while not hold.stopped:
            if check:
                check = False
                try:
                    if not self._still_mine((yield Call((self.INFO, self.name))), hold) and not hold.stopped:
                        self._lose(hold)
                        return
                except RedisError as e:
                    log.warning("fencelock: checking %r: %s", self.name, e)
                continue
            now = time.monotonic()
            if now >= hold.expires_by:
                self._lose(hold)
                return
            if now < hold.renew_at:
                event = yield Pause(hold.renew_at - now)
                check = event is not None and not event.endswith(_HARMLESS_EVENTS)
                continue
            assert self.renew_interval
            try:
                renewed = yield Call((self.EXTEND, self.name, hold.owner, self.ttl_ms))
            except RedisError as e:
                # Try again soon; the lease is only given up once it has surely ended.
                log.warning("fencelock: renewing %r: %s", self.name, e)
                hold.renew_at = time.monotonic() + min(self.renew_interval, 1.0)
                continue
            if hold.stopped:
                return
            if renewed:
                hold.confirm(self.ttl_ms, self.renew_interval)
            else:
                self._lose(hold)

    def _channel(self, db: int) -> bytes:
        return b"__keyspace@%d__:" % db + self._encode(self.name)

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} {self.name!r} token={self.token}>"


# ---- kind rules ------------------------------------------------------------------


class MutexRules(LockCore):
    family, ACQUIRE, RELEASE, EXTEND, INFO = "lock", "LOCK.ACQUIRE", "LOCK.RELEASE", "LOCK.EXTEND", "LOCK.INFO"

    def __init__(
        self,
        redis: Any,
        name: KeyT,
        timeout: Optional[float] = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: Optional[float] = None,
        thread_local: bool = True,
        raise_on_release_error: bool = True,
        *,
        owner: Optional[KeyT] = None,
        auto_renew: Optional[bool] = None,
        on_lost: Optional[Callable[[Any], Any]] = None,
        watch_events: bool = False,
        fence_key: Optional[KeyT] = None,
        wait_margin: float = WAIT_MARGIN,
    ) -> None:
        """A mutex in key `name`, with redis-py Lock's constructor signature (so
        `r.lock(name, ..., lock_class=Lock)` works). `timeout` is the lease in seconds
        (None: 30 s renewed every 10 s by a keeper); `sleep` is accepted and unused: the
        server queues waiters, nobody polls. `raise_on_release_error=False` (redis-py 6)
        makes leaving a `with` block log a lost lock instead of raising."""
        self.sleep = sleep
        self.raise_on_release_error = raise_on_release_error
        self.thread_local = bool(thread_local)
        self._init_scopes(self.thread_local)
        self._setup(
            redis, name, timeout, blocking, blocking_timeout, owner=owner, auto_renew=auto_renew,
            on_lost=on_lost, watch_events=watch_events, fence_key=fence_key, wait_margin=wait_margin,
        )

    def _entry(self, info: Optional[Dict[str, Any]], owner: bytes) -> Optional[Dict[str, Any]]:
        if info is None or info.get("owner") is None or self._encode(info["owner"]) != owner:
            return None
        return info

    def _busy(self, info: Optional[Dict[str, Any]]) -> bool:
        return info is not None and info.get("owner") is not None


class SemaphoreRules(LockCore):
    family, ACQUIRE, RELEASE, EXTEND, INFO = "sem", "SEM.ACQUIRE", "SEM.RELEASE", "SEM.EXTEND", "SEM.INFO"
    view = "sem"

    def __init__(
        self,
        redis: Any,
        name: KeyT,
        limit: int,
        timeout: Optional[float] = None,
        blocking: bool = True,
        blocking_timeout: Optional[float] = None,
        thread_local: bool = True,
        *,
        permits: int = 1,
        owner: Optional[KeyT] = None,
        auto_renew: Optional[bool] = None,
        on_lost: Optional[Callable[[Any], Any]] = None,
        watch_events: bool = False,
        fence_key: Optional[KeyT] = None,
        wait_margin: float = WAIT_MARGIN,
    ) -> None:
        """A counting semaphore of `limit` permits in key `name`; each acquire takes
        `permits` of them. Every client of one semaphore must state the same limit."""
        self.limit = _int(limit, "limit", 1, MAX_LIMIT)
        self.permits = _int(permits, "permits", 1, self.limit)
        self.sleep = 0.0
        self.thread_local = bool(thread_local)
        self._init_scopes(self.thread_local)
        self._setup(
            redis, name, timeout, blocking, blocking_timeout, owner=owner, auto_renew=auto_renew,
            on_lost=on_lost, watch_events=watch_events, fence_key=fence_key, wait_margin=wait_margin,
        )

    def _acquire_args(self, owner: bytes, wait: Optional[int]) -> Tuple[Any, ...]:
        args: Tuple[Any, ...] = (self.ACQUIRE, self.name, owner, self.limit, self.ttl_ms, "COUNT", self.permits)
        return args if wait is None else args + ("WAIT", wait)

    def _entry(self, info: Optional[Dict[str, Any]], owner: bytes) -> Optional[Dict[str, Any]]:
        for holder in (info or {}).get("holders", []):
            if self._encode(holder["owner"]) == owner:
                return holder
        return None

    def _busy(self, info: Optional[Dict[str, Any]]) -> bool:
        """True when this semaphore's `permits` are not free now."""
        return info is not None and int(info["available"]) < self.permits


class RWViewRules(LockCore):
    """RWLock.read or RWLock.write: a lock view whose owner is its RWLock's."""

    family, EXTEND, INFO = "rwlock", "RWLOCK.EXTEND", "RWLOCK.INFO"

    def __init__(self, parent: Any, mode: str) -> None:
        self.parent, self.view = parent, mode
        if mode == "read":
            self.ACQUIRE, self.RELEASE = "RWLOCK.RLOCK", "RWLOCK.RUNLOCK"
        else:
            self.ACQUIRE, self.RELEASE = "RWLOCK.WLOCK", "RWLOCK.WUNLOCK"
        self.sleep, self.thread_local = 0.0, parent.thread_local
        self._setup(**parent._options)

    def _scope(self, create: bool) -> Optional[Scope]:
        return self.parent._scope(create)  # type: ignore[no-any-return]

    def _entry(self, info: Optional[Dict[str, Any]], owner: bytes) -> Optional[Dict[str, Any]]:
        for holder in (info or {}).get("holders", []):
            if self._encode(holder["owner"]) == owner and _text(holder["mode"]) == self.view:
                return holder
        return None

    def _busy(self, info: Optional[Dict[str, Any]]) -> bool:
        """True when a writer holds (read view) or anyone holds (write view)."""
        if info is None:
            return False
        return info["mode"] == "write" if self.view == "read" else info["mode"] != "none"


class RWLockRules:
    """A read-write lock in key `name`. `.read` and `.write` are lock views with the
    whole Lock API (context managers, watchdog, fencing); one thread (task) uses one
    owner for both, so its writer can downgrade to reader and a sole reader upgrade."""

    read: Any
    write: Any
    _view: Callable[[Any, str], Any]
    _init_scopes: Callable[[bool], None]

    def __init__(
        self,
        redis: Any,
        name: KeyT,
        timeout: Optional[float] = None,
        blocking: bool = True,
        blocking_timeout: Optional[float] = None,
        thread_local: bool = True,
        *,
        owner: Optional[KeyT] = None,
        auto_renew: Optional[bool] = None,
        on_lost: Optional[Callable[[Any], Any]] = None,
        watch_events: bool = False,
        fence_key: Optional[KeyT] = None,
        wait_margin: float = WAIT_MARGIN,
    ) -> None:
        self.thread_local = bool(thread_local)
        self._init_scopes(self.thread_local)
        self._options = dict(
            redis=redis, name=name, timeout=timeout, blocking=blocking, blocking_timeout=blocking_timeout,
            owner=owner, auto_renew=auto_renew, on_lost=on_lost, watch_events=watch_events,
            fence_key=fence_key, wait_margin=wait_margin,
        )
        self.read = self._view(self, "read")
        self.write = self._view(self, "write")
        self.redis, self.name = self.read.redis, self.read.name

    def __repr__(self) -> str:
        return f"<{type(self).__module__}.{type(self).__qualname__} {self.name!r}>"


def fence_call_steps(fence_key: KeyT, token: int, command: Tuple[Any, ...]) -> Steps:
    _key(fence_key, "fence key")
    _int(token, "token", 1, (1 << 63) - 1)
    if not command:
        raise ValueError("fenced() needs a command to run behind the fence")
    try:
        # Once: the command behind the fence may not be idempotent (INCRBY, LPUSH).
        return (yield Once(("FENCE.CALL", fence_key, token) + tuple(command)))
    except ResponseError as e:
        raise _stale_or(e) from None


def fence_check_steps(fence_key: KeyT, token: int) -> Steps:
    _key(fence_key, "fence key")
    _int(token, "token", 1, (1 << 63) - 1)
    try:
        return bool((yield Call(("FENCE.CHECK", fence_key, token))))
    except ResponseError as e:
        raise _stale_or(e) from None


