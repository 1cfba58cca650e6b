"""The asyncio flavour: the same classes as `fencelock`, for `redis.asyncio` clients.
Every method that talks to the server is a coroutine; holds are per task (where the
synchronous classes keep them per thread), and a task keeps each one."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import math
import time
from types import TracebackType
from typing import Any, Awaitable, Callable, Dict, Optional, Set, Type, TypeVar, Union, cast

import redis
import redis.asyncio
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, LockError, LockNotOwnedError, MovedError, RedisClusterException, RedisError, ResponseError, TimeoutError

from ._core import (
    DEFAULT_LEASE,
    RENEW_FRACTION,
    WAIT_MARGIN,
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
    StaleTokenError,
    Steps,
    _text,
    fence_call_steps,
    fence_check_steps,
)

log = logging.getLogger("fencelock")
Client = Union[redis.asyncio.Redis, RedisCluster]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_callbacks: Set["asyncio.Task[Any]"] = set()  # strong references until they finish


# redis-py before 5.3 needs a command name here; later versions deprecate passing one.
_POOL_WANTS_NAME = (
    inspect.signature(redis.asyncio.ConnectionPool.get_connection).parameters["command_name"].default
    is inspect.Parameter.empty
)


async def send_once(client: Client, step: Once) -> Any:
    """One command on one connection, outside the client's retry loop, with the read
    timeout the step asks for, and the step's undo if no reply comes; in a cluster, to
    the node that serves the key's slot, following -MOVED and -ASK; see
    fencelock._sync.send_once."""
    if not isinstance(client, RedisCluster):
        pool = client.connection_pool
        conn = await (pool.get_connection(step.args[0]) if _POOL_WANTS_NAME else pool.get_connection())  # type: ignore[call-arg]
        try:
            return await _send_on(conn, step)
        finally:
            await pool.release(conn)
    # -MOVED/-ASK come before the command runs (and a blocked waiter answered -MOVED is
    # queued nowhere): send it again where the reply points, as RedisCluster does.
    nodes, first, started = client.nodes_manager, step, time.monotonic()
    node, asking, redirections = await _node(client, step.args[1]), False, 0
    while True:
        conn = node.acquire_connection()
        try:
            return await _send_on(conn, step, asking)
        except AskError as e:  # MovedError is an AskError too
            redirect = e
        finally:
            node._free.append(conn)  # what ClusterNode.execute_command does
        redirections += 1
        if redirections >= client.RedisClusterRequestTTL:
            raise redirect
        if isinstance(redirect, MovedError):  # the slot has moved: update the client's map
            nodes._moved_exception = redirect  # as RedisCluster does
            node, asking = nodes.get_node_from_slot(redirect.slot_id), False
        else:  # mid-move, the key has left: ask the importing node, this once
            node, asking = client.get_node(host=redirect.host, port=redirect.port), True
            if node is None:
                raise redirect
        step = first.resent(time.monotonic() - started)


async def _send_on(conn: Any, step: Once, asking: bool = False) -> Any:
    try:
        if asking:  # good for the next command only: sent with it, so that the undo
            # below never follows an unsent command
            await conn.send_packed_command(conn.pack_commands([("ASKING",), step.args]))
            await _read(conn, step)  # +OK
        else:
            await conn.send_command(*step.args)
        return await _read(conn, step)
    except ResponseError:
        raise
    except BaseException:
        # Only down the same connection: a new one would queue behind nothing.
        if step.undo is not None and conn.is_connected:
            try:  # (after ASKING, else the importing node would redirect it)
                undo = [("ASKING",), step.undo] if asking else [step.undo]
                await conn.send_packed_command(conn.pack_commands(undo), check_health=False)
            except Exception:
                pass  # the connection is gone: the server drops what it had of ours
        await conn.disconnect(nowait=True)
        raise


async def _read(conn: Any, step: Once) -> Any:
    if step.wait is None:
        return await conn.read_response()
    # The connection's own socket timeout must not cut a WAIT short; the limit is the
    # step's alone.
    saved, conn.socket_timeout = conn.socket_timeout, None
    try:
        # Kept open on a timeout (redis-py would close it), for the undo.
        reply = conn.read_response(disconnect_on_error=False)
        return await asyncio.wait_for(reply, None if step.wait == math.inf else step.wait)
    except asyncio.TimeoutError:
        raise TimeoutError(f"{step.args[0]}: no reply within {step.wait:.3f} s (WAIT + wait_margin)") from None
    finally:
        conn.socket_timeout = saved


async def _node(client: RedisCluster, key: KeyT) -> Any:
    await client.initialize()
    node = client.get_node_from_key(key)  # type: ignore[arg-type]
    if node is None:
        raise RedisClusterException(f"no cluster node serves the slot of {key!r}")
    return node


async def run(client: Client, steps: Steps, pause: Optional[Callable[[float], Awaitable[Optional[str]]]] = None) -> Any:
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
                reply = await client.execute_command(*step.args)
            elif isinstance(step, Once):
                reply = await send_once(client, step)
            else:
                assert pause is not None
                reply = await pause(step.seconds)
        except Exception as e:
            error = e


def _current_task() -> Optional["asyncio.Task[Any]"]:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop: a look at `token` or repr() from sync code
        return None


class _TaskScopes:
    """Holds are per task (per object with thread_local=False), so a Lock object shared
    by tasks excludes them from each other and re-entry is per task. A task that never
    acquired through the object acts on its one active hold, as with redis-py's asyncio
    Lock: releasing in another task, or acquiring inside `asyncio.wait_for` (a task of
    its own before Python 3.12), works."""

    def _init_scopes(self, per_task: bool) -> None:
        self._per_task = per_task
        self._scopes: Dict[Any, Scope] = {}

    def _scope(self, create: bool) -> Optional[Scope]:
        task = _current_task() if self._per_task else None
        scope = self._scopes.get(task)
        if scope is None and create:
            for done in [t for t, s in self._scopes.items() if t is not None and t.done() and not s.active()]:
                del self._scopes[done]
            scope = self._scopes[task] = Scope()
        elif scope is None:
            active = [s for s in self._scopes.values() if s.active()]
            scope = active[0] if len(active) == 1 else None
        return scope


class _AsyncView(LockCore):
    def _check_client(self, client: Any) -> None:
        if not isinstance(client, (redis.asyncio.Redis, RedisCluster)):
            raise TypeError(f"expected a redis.asyncio.Redis or RedisCluster client, not {type(client).__name__}")

    async def _run(self, steps: Steps) -> Any:
        return await run(self.redis, steps)

    async def acquire(
        self,
        blocking: Optional[bool] = None,
        timeout: Optional[float] = None,
        *,
        sleep: Optional[float] = None,
        blocking_timeout: Optional[float] = None,
        token: Optional[KeyT] = None,
    ) -> bool:
        """See fencelock.Lock.acquire."""
        return cast(bool, await self._run(self._acquire_steps(blocking, timeout, blocking_timeout, token)))

    async def release(self) -> None:
        """See fencelock.Lock.release."""
        await self._run(self._release_steps())

    async def extend(self, additional_time: float, replace_ttl: bool = False) -> bool:
        """See fencelock.Lock.extend."""
        return cast(bool, await self._run(self._extend_steps(additional_time, replace_ttl)))

    async def reacquire(self) -> bool:
        """See fencelock.Lock.reacquire."""
        return cast(bool, await self._run(self._reacquire_steps()))

    async def owned(self) -> bool:
        """See fencelock.Lock.owned."""
        return cast(bool, await self._run(self._owned_steps()))

    async def locked(self) -> bool:
        """See fencelock.Lock.locked."""
        return cast(bool, await self._run(self._locked_steps()))

    async def info(self) -> Optional[dict]:
        """See fencelock.Lock.info."""
        return cast(Optional[dict], await self._run(self._info_steps()))

    async def fenced(self, *command: Any, fence_key: Optional[KeyT] = None) -> Any:
        """See fencelock.Lock.fenced."""
        key, token = self._fence_args("write under", fence_key)
        return await fenced(self.redis, key, token, *command)

    async def check_fence(self, fence_key: Optional[KeyT] = None) -> bool:
        """See fencelock.Lock.check_fence."""
        key, token = self._fence_args("check", fence_key)
        return await check_fence(self.redis, key, token)

    async def __aenter__(self) -> Any:
        if await self.acquire():
            return self
        raise LockError("Unable to acquire lock within the time specified", lock_name=self.name)

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        try:
            await self.release()
        except LockError:
            if self.raise_on_release_error:
                raise
            log.warning("fencelock: %r was not held any more at the end of its block", self.name)

    def __call__(self, fn: F) -> F:
        """Use the lock as a decorator of a coroutine function: every call runs holding it."""
        if not inspect.iscoroutinefunction(fn):
            raise TypeError("fencelock.asyncio locks decorate coroutine functions; use fencelock's for others")

        @functools.wraps(fn)
        async def locked_call(*args: Any, **kwargs: Any) -> Any:
            async with self:
                return await fn(*args, **kwargs)

        return cast(F, locked_call)

    # Flavour hooks.
    def _new_event(self) -> asyncio.Event:
        return asyncio.Event()

    def _call_back(self, fn: Callable[[Any], Any]) -> None:
        try:
            result = fn(self)
        except Exception:
            log.exception("fencelock: on_lost callback of %r failed", self.name)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            _callbacks.add(task)
            task.add_done_callback(_callback_done)

    def _start_keeper(self, hold: Hold) -> None:
        hold.keeper = asyncio.get_running_loop().create_task(self._keep(hold), name=f"fencelock-keeper:{_text(self.name)}")

    def _stop_keeper(self, hold: Hold) -> None:
        # The keeper may be the one that found the hold lost; it ends by itself then.
        if hold.keeper is not None and hold.keeper is not _current_task():
            hold.keeper.cancel()

    async def _keep(self, hold: Hold) -> None:
        pubsub, standalone = None, None
        try:
            if self.watch_events:
                try:
                    pubsub, standalone = await self._subscribe()
                except RedisError as e:  # keep renewing without events
                    log.warning("fencelock: keyspace events of %r: %s", self.name, e)

            async def pause(seconds: float) -> Optional[str]:
                nonlocal pubsub
                end = time.monotonic() + seconds
                while pubsub is not None and (left := end - time.monotonic()) > 0:
                    try:
                        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
                    except RedisError as e:  # keep renewing without events
                        log.warning("fencelock: keyspace events of %r: %s", self.name, e)
                        await pubsub.aclose()
                        pubsub = None
                        break
                    if msg and msg.get("type") == "message":
                        return cast(str, _text(msg["data"]))
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                return None

            await run(self.redis, self._keep_steps(hold), pause)
        except asyncio.CancelledError:
            pass  # released
        except Exception:
            log.exception("fencelock: keeper of %r failed", self.name)
        finally:
            if pubsub is not None:
                await pubsub.aclose()
            if standalone is not None:
                await standalone.aclose()

    async def _subscribe(self) -> Any:
        client, standalone = self.redis, None
        if isinstance(client, RedisCluster):
            # Keyspace events are sent by the key's node; redis.asyncio's cluster client
            # has no pub/sub, so talk to that node directly.
            node = await _node(client, self.name)
            pool = redis.asyncio.ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
            standalone = redis.asyncio.Redis.from_pool(pool)
            pubsub, db = standalone.pubsub(), 0
        else:
            pubsub, db = client.pubsub(), int(client.connection_pool.connection_kwargs.get("db", 0))
        try:
            await pubsub.subscribe(self._channel(db))
        except BaseException:
            await pubsub.aclose()
            if standalone is not None:
                await standalone.aclose()
            raise
        return pubsub, standalone


def _callback_done(task: "asyncio.Task[Any]") -> None:
    _callbacks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("fencelock: on_lost callback failed", exc_info=task.exception())


class Lock(MutexRules, _TaskScopes, _AsyncView):
    """See fencelock.Lock; a drop-in `lock_class` for redis.asyncio's `Redis.lock()`."""


class Semaphore(SemaphoreRules, _TaskScopes, _AsyncView):
    """See fencelock.Semaphore."""


class _RWView(RWViewRules, _AsyncView):
    pass


class RWLock(RWLockRules, _TaskScopes):
    """See fencelock.RWLock: `async with rw.read:` shares, `async with rw.write:` excludes."""

    read: _RWView
    write: _RWView
    _view = _RWView


async def fenced(client: Client, fence_key: KeyT, token: int, *command: Any) -> Any:
    """See fencelock.fenced."""
    return await run(client, fence_call_steps(fence_key, token, command))


async def check_fence(client: Client, fence_key: KeyT, token: int) -> bool:
    """See fencelock.check_fence."""
    return cast(bool, await run(client, fence_check_steps(fence_key, token)))


__all__ = [
    "Lock", "RWLock", "Semaphore", "fenced", "check_fence", "LockError", "LockNotOwnedError",
    "StaleTokenError", "DEFAULT_LEASE", "RENEW_FRACTION", "WAIT_MARGIN",
]
