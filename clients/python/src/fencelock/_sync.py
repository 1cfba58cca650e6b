"""The synchronous flavour: runs the steps of `_core` with redis-py's blocking client,
keeps each hold with a daemon thread."""

from __future__ import annotations

import functools
import inspect
import logging
import math
import threading
import time
from types import SimpleNamespace, TracebackType
from typing import Any, Callable, Optional, Type, TypeVar, Union, cast

import redis
import redis.asyncio
from redis.cluster import RedisCluster
from redis.exceptions import AskError, LockError, MovedError, RedisError, ResponseError, TimeoutError

from ._core import (
    Call,
    Hold,
    KeyT,
    LockCore,
    MutexRules,
    Once,
    Request,
    RWLockRules,
    RWViewRules,
    Scope,
    SemaphoreRules,
    Steps,
    _text,
    fence_call_steps,
    fence_check_steps,
)

log = logging.getLogger("fencelock")
Client = Union[redis.Redis, RedisCluster]
F = TypeVar("F", bound=Callable[..., Any])
# A keeper that listens for keyspace events waits in slices this long, so that it
# notices a release soon: redis-py's PubSub cannot be woken from another thread.
EVENT_SLICE = 0.2


# redis-py before 5.3 needs a command name here; later versions deprecate passing one.
_POOL_WANTS_NAME = inspect.signature(redis.ConnectionPool.get_connection).parameters["command_name"].default is inspect.Parameter.empty


def send_once(client: Client, step: Once) -> Any:
    """One command on one pooled connection, outside the client's retry loop, with the
    read timeout the step asks for. Without a reply, the step's undo goes down the same
    connection and the connection is closed (see `_core.Once`). In a cluster, to the
    node that serves the key's slot, following -MOVED and -ASK."""
    if not isinstance(client, RedisCluster):
        return _send_on(client.connection_pool, step)
    # The server answers -MOVED/-ASK before it runs the command, and a blocked waiter
    # it answers -MOVED (its slot moved away) is no longer queued there: so, as
    # RedisCluster does for its own commands, send it again where the reply points (at
    # most RedisClusterRequestTTL times). It still runs once at most, and a blocking
    # acquire keeps its deadline (`Once.resent`).
    nodes, first, started = client.nodes_manager, step, time.monotonic()
    node, asking, redirections = client.get_node_from_key(step.args[1]), False, 0
    while True:
        try:
            return _send_on(client.get_redis_connection(node).connection_pool, step, asking)
        except AskError as e:  # MovedError is an AskError too
            redirections += 1
            if redirections >= client.RedisClusterRequestTTL:
                raise
            if isinstance(e, MovedError):  # the slot has moved: update the client's map
                nodes.update_moved_exception(e)
                node, asking = nodes.get_node_from_slot(e.slot_id), False
            else:  # mid-move, the key has left: ask the importing node, this once
                node, asking = client.get_node(host=e.host, port=e.port), True
                if node is None:
                    raise
        step = first.resent(time.monotonic() - started)


def _send_on(pool: Any, step: Once, asking: bool = False) -> Any:
    conn: Any = pool.get_connection(step.args[0]) if _POOL_WANTS_NAME else pool.get_connection()
    try:
        if asking:  # good for the next command only: sent with it in one write, so
            # that no health check comes between and the undo below never follows an
            # unsent command
            conn.send_packed_command(conn.pack_commands([("ASKING",), step.args]))
        else:
            conn.send_command(*step.args)
        for _ in range(2 if asking else 1):  # ASKING's +OK, then the command's reply
            if step.wait is not None:
                if not conn.can_read(timeout=None if step.wait == math.inf else step.wait):
                    raise TimeoutError(f"{step.args[0]}: no reply within {step.wait:.3f} s (WAIT + wait_margin)")
            reply = conn.read_response()
        return reply
    except ResponseError:
        raise
    except BaseException:
        # Only down the same connection: a new one would queue behind nothing.
        if step.undo is not None and conn._sock is not None:
            try:  # (after ASKING, else the importing node would redirect it)
                undo = [("ASKING",), step.undo] if asking else [step.undo]
                conn.send_packed_command(conn.pack_commands(undo), check_health=False)
            except Exception:
                pass  # the connection is gone: the server drops what it had of ours
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def run(client: Client, steps: Steps, pause: Optional[Callable[[float], Optional[str]]] = None) -> Any:
    """Carry out the requests a `_core` generator yields, feeding back replies or errors."""
    reply: Any = None
    error: Optional[Exception] = None
    while True:
        try:
            step: Request = steps.throw(error) if error is not None else steps.send(reply)
        except StopIteration as done:
            return done.value
        reply, error = None, None
        try:
            if isinstance(step, Call):
                reply = client.execute_command(*step.args)
            elif isinstance(step, Once):
                reply = send_once(client, step)
            else:
                assert pause is not None
                reply = pause(step.seconds)
        except Exception as e:
            error = e


class _ThreadScopes:
    """Holds are per thread by default, as redis-py's `thread_local=True` keeps tokens:
    a Lock object shared by threads excludes them from each other."""

    def _init_scopes(self, per_thread: bool) -> None:
        self._local = threading.local() if per_thread else SimpleNamespace()

    def _scope(self, create: bool) -> Optional[Scope]:
        scope: Optional[Scope] = getattr(self._local, "scope", None)
        if scope is None and create:
            scope = self._local.scope = Scope()
        return scope


class _SyncView(LockCore):
    def _check_client(self, client: Any) -> None:
        if isinstance(client, (redis.asyncio.Redis, redis.asyncio.RedisCluster)):
            raise TypeError("an asyncio client needs fencelock.asyncio's classes")
        if not isinstance(client, (redis.Redis, RedisCluster)):
            raise TypeError(f"expected a redis.Redis or redis.RedisCluster client, not {type(client).__name__}")

    def _run(self, steps: Steps) -> Any:
        return run(self.redis, steps)

    def acquire(
        self,
        blocking: Optional[bool] = None,
        timeout: Optional[float] = None,
        *,
        sleep: Optional[float] = None,
        blocking_timeout: Optional[float] = None,
        token: Optional[KeyT] = None,
    ) -> bool:
        """Take the lock; True when granted. `blocking=False` tries once; otherwise the
        server queues this client for `timeout` seconds (None: the constructor's
        `blocking_timeout`, where None or -1 wait without limit). `blocking_timeout` is
        redis-py's name for `timeout`, and `token` its name for the owner string;
        `sleep` is ignored (nobody polls). Re-acquiring in the thread that holds it adds
        a hold and keeps the token."""
        return cast(bool, self._run(self._acquire_steps(blocking, timeout, blocking_timeout, token)))

    def release(self) -> None:
        """Give back one hold; raises LockError when not held and LockNotOwnedError
        when the lease had already ended (the lost signal fires then too)."""
        self._run(self._release_steps())

    def extend(self, additional_time: float, replace_ttl: bool = False) -> bool:
        """Add `additional_time` seconds to what is left of the lease (or, with
        `replace_ttl`, make it the lease). LockNotOwnedError if the lease is over."""
        return cast(bool, self._run(self._extend_steps(additional_time, replace_ttl)))

    def reacquire(self) -> bool:
        """Reset the lease to the full `timeout`. LockNotOwnedError if it is over."""
        return cast(bool, self._run(self._reacquire_steps()))

    def owned(self) -> bool:
        """Whether the server says this thread's hold (owner and token) is current."""
        return cast(bool, self._run(self._owned_steps()))

    def locked(self) -> bool:
        """Whether the lock is held by anyone (for a Semaphore: whether its permits are
        not free now; for RWLock.read: whether a writer holds)."""
        return cast(bool, self._run(self._locked_steps()))

    def info(self) -> Optional[dict]:
        """The server's INFO for the key as a dict (None when free with no waiters)."""
        return cast(Optional[dict], self._run(self._info_steps()))

    def fenced(self, *command: Any, fence_key: Optional[KeyT] = None) -> Any:
        """Run `command` behind the fence with this hold's token (FENCE.CALL); its reply,
        or StaleTokenError when a newer holder has written through the fence."""
        key, token = self._fence_args("write under", fence_key)
        return fenced(self.redis, key, token, *command)

    def check_fence(self, fence_key: Optional[KeyT] = None) -> bool:
        """FENCE.CHECK this hold's token: True, or StaleTokenError."""
        key, token = self._fence_args("check", fence_key)
        return check_fence(self.redis, key, token)

    def __enter__(self) -> Any:
        if self.acquire():
            return self
        raise LockError("Unable to acquire lock within the time specified", lock_name=self.name)

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        try:
            self.release()
        except LockError:
            if self.raise_on_release_error:
                raise
            log.warning("fencelock: %r was not held any more at the end of its block", self.name)

    def __call__(self, fn: F) -> F:
        """Use the lock as a decorator: every call runs holding it."""
        if inspect.iscoroutinefunction(fn):
            raise TypeError("decorate coroutine functions with fencelock.asyncio's classes")

        @functools.wraps(fn)
        def locked_call(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        return cast(F, locked_call)

    # Flavour hooks.
    def _new_event(self) -> threading.Event:
        return threading.Event()

    def _call_back(self, fn: Callable[[Any], Any]) -> None:
        try:
            fn(self)
        except Exception:
            log.exception("fencelock: on_lost callback of %r failed", self.name)

    def _start_keeper(self, hold: Hold) -> None:
        hold.wake = threading.Event()
        hold.keeper = threading.Thread(target=self._keep, args=(hold,), name=f"fencelock-keeper:{_text(self.name)}", daemon=True)
        hold.keeper.start()

    def _stop_keeper(self, hold: Hold) -> None:
        if hold.wake is not None:
            hold.wake.set()

    def _keep(self, hold: Hold) -> None:
        pubsub = None
        try:
            if self.watch_events:
                try:
                    pubsub = self._subscribe()
                except RedisError as e:  # keep renewing without events
                    log.warning("fencelock: keyspace events of %r: %s", self.name, e)
            run(self.redis, self._keep_steps(hold), lambda seconds: self._pause(hold, pubsub, seconds))
        except Exception:
            log.exception("fencelock: keeper of %r failed", self.name)
        finally:
            if pubsub is not None:
                pubsub.close()

    def _subscribe(self) -> Any:
        client = self.redis
        if isinstance(client, RedisCluster):  # keyspace events are sent by the key's node
            pubsub, db = client.pubsub(node=client.get_node_from_key(self.name)), 0
        else:
            pubsub, db = client.pubsub(), int(client.connection_pool.connection_kwargs.get("db", 0))
        pubsub.subscribe(self._channel(db))
        return pubsub

    def _pause(self, hold: Hold, pubsub: Any, seconds: float) -> Optional[str]:
        if pubsub is None:
            hold.wake.wait(seconds)
            return None
        end = time.monotonic() + seconds
        while not hold.stopped and (left := end - time.monotonic()) > 0:
            try:
                msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=min(left, EVENT_SLICE))
            except RedisError as e:  # keep renewing without events
                log.warning("fencelock: keyspace events of %r: %s", self.name, e)
                pubsub.close()
                return self._pause(hold, None, end - time.monotonic())
            if msg and msg.get("type") == "message":
                return cast(str, _text(msg["data"]))
        return None


class Lock(MutexRules, _ThreadScopes, _SyncView):
    """A distributed mutex (LOCK.*) with fencing tokens; a drop-in `lock_class` for
    redis-py's `Redis.lock()`. Use `with lock:`, `@lock` or acquire()/release()."""


class Semaphore(SemaphoreRules, _ThreadScopes, _SyncView):
    """A counting semaphore (SEM.*): `limit` permits shared by holders, each with its
    own lease and fencing token."""


class _RWView(RWViewRules, _SyncView):
    pass


class RWLock(RWLockRules, _ThreadScopes):
    """A read-write lock (RWLOCK.*): `with rw.read:` shares, `with rw.write:` excludes."""

    read: _RWView
    write: _RWView
    _view = _RWView


def fenced(client: Client, fence_key: KeyT, token: int, *command: Any) -> Any:
    """FENCE.CALL: run `command` only if `token` is not older than the fence's highest,
    atomically; the command's reply, or StaleTokenError. Sent once, never re-sent by a
    retry, since the command may not be idempotent."""
    return run(client, fence_call_steps(fence_key, token, command))


def check_fence(client: Client, fence_key: KeyT, token: int) -> bool:
    """FENCE.CHECK: True and `token` recorded, or StaleTokenError."""
    return cast(bool, run(client, fence_check_steps(fence_key, token)))
